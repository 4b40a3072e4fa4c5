"""``diffface evaluate``: align reconstructed meshes to ground-truth scans and report d, mm errors, CED and AUC."""

from __future__ import annotations

import argparse
from pathlib import Path

from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate reconstructed meshes against ground-truth meshes (ICP, d, mm, CED, AUC)",
        description="Pair PRED and GT meshes by name (face_0001.png.obj matches face_0001.obj), align each "
                    "reconstruction to its scan by ICP onto the scan surface (and by landmarks alone where both "
                    "sides have landmarks), and write OUT/report.json (per-sample errors; per method n, auc, "
                    "median d, mm errors) and OUT/ced.png. With --compare, several methods against --gt.")
    p.add_argument("pred", nargs="?", type=Path, help="folder of predicted meshes (or a fit output folder)")
    p.add_argument("gt_pos", nargs="?", type=Path, metavar="GT",
                   help="folder of ground-truth meshes with NAME_landmarks.npy (or a synth output folder)")
    p.add_argument("--compare", nargs="+", metavar="NAME=DIR", help="several methods' folders of predicted meshes")
    p.add_argument("--gt", type=Path, help="the ground-truth folder (with --compare)")
    p.add_argument("--out", type=Path, required=True, help="output folder for report.json and ced.png")
    p.add_argument("--scale", action=argparse.BooleanOptionalAction, default=False,
                   help="align with a similarity (uniform scale) instead of rigidly (default: --no-scale)")
    p.add_argument("--landmarks", metavar="FILE",
                   help="68 landmark vertex indices into every predicted mesh (.npy or text, -1 undefined), or "
                        "'builtin' for the built-in model's; default: NAME_landmarks.npy beside each prediction")
    p.add_argument("--max-error", type=float, default=1.0, help="CED/AUC range of d (default 1.0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _methods(args) -> tuple[dict[str, Path], Path]:
    if args.compare:
        if args.pred is not None or args.gt_pos is not None:
            raise ValueError("give either PRED GT or --compare NAME=DIR ... --gt GT, not both")
        if args.gt is None:
            raise ValueError("--compare needs --gt GT")
        methods = {}
        for item in args.compare:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise ValueError(f"--compare takes NAME=DIR items, got {item!r}")
            if name in methods:
                raise ValueError(f"--compare names {name!r} twice")
            methods[name] = Path(folder)
        return methods, args.gt
    gt = args.gt_pos if args.gt_pos is not None else args.gt
    if args.pred is None or gt is None:
        raise ValueError("give PRED GT (two folders) or --compare NAME=DIR ... --gt GT")
    return {args.pred.name or "prediction": args.pred}, gt


def run(args) -> int:
    from tqdm import tqdm

    from ..evaluation.evaluate import evaluate_methods, list_meshes, read_landmark_indices

    methods, gt = _methods(args)
    if args.max_error <= 0:
        raise ValueError(f"--max-error must be positive, got {args.max_error}")
    indices = None if args.landmarks is None else read_landmark_indices(args.landmarks)
    for folder in methods.values():
        list_meshes(folder)  # a missing folder fails here, before the progress bar
    total = len(list_meshes(gt)) * len(methods)
    with tqdm(total=total, desc="evaluating", unit="pair", disable=args.json) as bar:
        report = evaluate_methods(methods, gt, args.out, with_scale=args.scale, landmark_indices=indices,
                                  max_error=args.max_error, progress=bar.update)
    summary = {}
    for name, figures in report["methods"].items():
        for alignment, values in (("icp", figures), ("landmarks", figures["landmarks"])):
            if values is None:
                continue
            prefix = name if alignment == "icp" else f"{name}/landmarks"
            summary.update({f"{prefix}/{key}": values[key] for key in ("n", "n_failed", "auc", "median", "mean_mm")})
    summary.update(report=str(args.out / "report.json"), ced=str(args.out / "ced.png"))
    print_figures(summary, args.json, title="diffface evaluate")
    return 0
