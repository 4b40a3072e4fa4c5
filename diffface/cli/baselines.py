"""``diffface baselines``: the mean-shape and upper-bound baselines for a ground-truth folder."""

from __future__ import annotations

from pathlib import Path

from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser(
        "baselines", help="write the mean-shape and upper-bound baselines for a ground-truth folder",
        description="For every ground-truth mesh GT/NAME.obj (+ NAME_landmarks.npy, e.g. a 'diffface synth' "
                    "folder's meshes/), write DIR/meanshape/NAME.obj (the model's mean shape) and "
                    "DIR/upper/NAME.obj (the model registered to the mesh in 3D: identity, expression and a "
                    "rigid or similarity transform; written in model space), for 'diffface evaluate' to score. "
                    "Without --meanshape or --upper-bound, both are written.")
    p.add_argument("--gt", type=Path, required=True, help="ground-truth meshes: S/meshes (or the synth folder S)")
    p.add_argument("--out", type=Path, required=True, help="output folder (meanshape/ and upper/ inside)")
    p.add_argument("--model", default="builtin", help="'builtin' (default) or a model file")
    p.add_argument("--meanshape", action="store_true", help="write DIR/meanshape/NAME.obj")
    p.add_argument("--upper-bound", action="store_true", help="write DIR/upper/NAME.obj")
    p.add_argument("--iterations", type=int, default=12, help="upper bound: registration rounds (default 12)")
    p.add_argument("--with-scale", action="store_true",
                   help="upper bound: also fit a scale (default: rigid; ground truth and model both in mm)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    import numpy as np

    from ..evaluation.baselines import ground_truth_names, mean_shape_baseline, write_upper_bound
    from ..morphable_model import load_morphable_model

    if args.iterations < 1:
        raise ValueError(f"--iterations must be at least 1, got {args.iterations}")
    both = not (args.meanshape or args.upper_bound)
    names = ground_truth_names(args.gt)  # checked before the model loads, so a bad folder fails fast
    model = load_morphable_model(args.model)
    summary: dict = {"samples": len(names), "model": model.name}
    if args.meanshape or both:
        mean_shape_baseline(model, names, args.out / "meanshape")
        summary["meanshape"] = str(args.out / "meanshape")
    if args.upper_bound or both:
        started = time.perf_counter()
        fits = write_upper_bound(model, args.gt, args.out / "upper", iterations=args.iterations,
                                 with_scale=args.with_scale)
        summary["upper"] = str(args.out / "upper")
        summary["upper_residual_mm_mean"] = float(np.mean([f.residual_mm for f in fits.values()]))
        summary["upper_seconds"] = time.perf_counter() - started
    print_figures(summary, args.json, title="diffface baselines")
    return 0
