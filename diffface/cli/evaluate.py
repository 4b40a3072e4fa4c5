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
                    "median d, mm errors) and OUT/ced.png. With --compare, several methods against --gt. A fit "
                    "folder without meshes is evaluated from its results (the fitted parameters and the model, "
                    "--model or the one its config.yaml names, whose fingerprint must match). Unmatched names are "
                    "an error unless --allow-missing.")
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
    p.add_argument("--model", help="fit folders without meshes: the morphable model their results were fitted "
                                   "with (default: the one their config.yaml names)")
    p.add_argument("--allow-missing", action="store_true",
                   help="evaluate even when names do not all pair (a missing prediction counts as a failure)")
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


def _predictions(folder: Path, model_spec: str | None, models: dict):
    """A folder of meshes as it is; a fit folder without meshes as its results rebuilt with their model."""
    from ..evaluation.evaluate import PredictionSet, list_meshes
    from ..fitting.job.results import RESULTS_DIR, fit_model_spec, fitted_meshes
    from ..morphable_model import load_morphable_model

    if list_meshes(folder) or not (folder / RESULTS_DIR).is_dir():
        return folder  # a folder with no meshes and no results fails in evaluate_methods, naming it
    spec = model_spec or fit_model_spec(folder)
    if spec is None:
        raise ValueError(f"{folder}: has fit results but no meshes, and names no model (no config.yaml); "
                         "pass --model, the model its results were fitted with")
    if spec not in models:
        try:
            models[spec] = load_morphable_model(spec)
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"{folder}: its fit results need the morphable model they were fitted with: {exc} "
                             "(pass --model)") from exc
    meshes = fitted_meshes(folder, models[spec])
    if not meshes:
        raise ValueError(f"{folder}: no meshes and no fit results ({folder / RESULTS_DIR}/*.npz)")
    return PredictionSet(folder, meshes)


def run(args) -> int:
    from tqdm import tqdm

    from ..evaluation.evaluate import (check_pairing, evaluate_methods, list_meshes, prediction_set,
                                       read_landmark_indices)

    methods, gt = _methods(args)
    if args.max_error <= 0:
        raise ValueError(f"--max-error must be positive, got {args.max_error}")
    indices = None if args.landmarks is None else read_landmark_indices(args.landmarks)
    models: dict = {}
    methods = {name: prediction_set(_predictions(folder, args.model, models)) for name, folder in methods.items()}
    gt_meshes = list_meshes(gt)
    for predictions in methods.values():  # before the progress bar: a bad pairing is one clear line
        check_pairing(predictions, gt_meshes, gt, args.allow_missing)
    total = len(gt_meshes) * len(methods)
    with tqdm(total=total, desc="evaluating", unit="pair", disable=args.json) as bar:
        report = evaluate_methods(methods, gt, args.out, with_scale=args.scale, landmark_indices=indices,
                                  max_error=args.max_error, progress=bar.update, allow_missing=args.allow_missing)
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
