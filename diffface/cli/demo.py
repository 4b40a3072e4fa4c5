"""``diffface demo``: run the main job on the built-in model and write a report."""

from __future__ import annotations

from pathlib import Path

from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline on synthetic faces and write a report",
                       description="Synthesise faces with ground truth from a morphable model (default: the "
                                   "built-in one), fit them, and write DIR/report.json, report.md and fits.png.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--model", default="builtin", help="'builtin' or a model file")
    p.add_argument("--n", type=int, default=16, help="number of synthetic faces (default 16)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=6, help="landmark-fitting rounds")
    p.add_argument("--texture-rounds", type=int, default=3, help="texture-fitting rounds (0: landmarks only)")
    p.add_argument("--norm", default="l21", choices=["l1", "l2", "l21"], help="texture-term norm")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import DemoConfig, run_demo
    from ..synth import SceneConfig

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    config = DemoConfig(model=args.model, num_faces=args.n, device=args.device, scene=SceneConfig(seed=args.seed),
                        fit_rounds=args.rounds, texture_rounds=args.texture_rounds, texture_norm=args.norm)
    report = run_demo(args.out, config, show_progress=not args.json)
    fit, base = report["landmark_fit"], report["mean_shape_baseline"]
    figures = report if args.json else {
        "faces": report["num_faces"],
        "mean-shape vertex error (mm)": base["vertex_error_mm_mean"],
        "landmark-fit vertex error (mm)": fit["vertex_error_mm_mean"],
        "landmark RMS vs clean (px)": fit["rms_px_vs_clean"],
        "landmark fitting images/s": fit["images_per_s"],
        **({} if report["texture_fit"] is None else {
            "texture-fit vertex error (mm)": report["texture_fit"]["vertex_error_mm_mean"],
            "texture fitting images/s": report["texture_fit"]["images_per_s"]}),
        "report": str(Path(args.out) / "report.json"),
    }
    print_figures(figures, args.json, title="diffface demo")
    return 0
