"""``diffface demo``: run the whole pipeline (synthesise or read photos → landmarks → fit → dataset → curate
→ train → export → predict → evaluate) and write ``DIR/report.html`` and ``DIR/report.json``."""

from __future__ import annotations

from pathlib import Path

from .config_args import add_config_arguments, config_layers
from .output import print_figures

# option -> DemoConfig field, for the sizes that may be overridden (also on top of --quick)
SIZE_OPTIONS = {"train_faces": "train-faces", "heldout_faces": "heldout-faces", "image_size": "image-size",
                "fit_rounds": "rounds", "texture_rounds": "texture-rounds", "train_steps": "steps",
                "batch_size": "batch-size", "seed": "seed", "texture_norm": "norm", "threads": "threads",
                "init": "init"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline on synthetic faces (or your photos) and write an HTML report",
        description="Synthesise photos with ground-truth meshes from the morphable model (or take --images), "
                    "read their landmarks, fit them (landmarks, then texture), build and automatically curate a "
                    "dataset, train the network briefly, export it (TorchScript, ONNX), predict the held-out "
                    "photos and evaluate every method against the ground truth. Writes DIR/report.html "
                    "(self-contained), DIR/report.json and one subfolder per step; prints the figures table. "
                    "Settings: defaults (or --quick's) < --config FILE < the options below < --set key=value.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    add_config_arguments(p, "DemoConfig", "DIR/config.json", "override one setting, repeatable: --set lr=0.001 "
                         "--set export_formats=torchscript")
    p.add_argument("--model", help="'builtin' (default) or a morphable-model file (e.g. BFM.npz)")
    p.add_argument("--images", type=Path, help="a folder of your photos (no ground truth) instead of synthetic ones")
    p.add_argument("--landmarks", choices=["pts", "dlib", "fan", "auto"],
                   help="with --images: pts (.pts files beside the photos, default), dlib, fan or auto")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (about a minute on 2 CPU cores), for a first look")
    p.add_argument("--train-faces", type=int, help="synthetic training photos (default 800; --quick 24)")
    p.add_argument("--heldout-faces", type=int, help="held-out photos (default 8; --quick 2)")
    p.add_argument("--image-size", type=int, help="side of the synthetic photos (default 128)")
    p.add_argument("--rounds", type=int, help="landmark-fitting rounds (default 3)")
    p.add_argument("--texture-rounds", type=int, help="texture-fitting rounds (default 1; 0: landmarks only)")
    p.add_argument("--norm", choices=["l1", "l2", "l21"], help="texture-term norm (default l21)")
    p.add_argument("--steps", type=int, help="training steps (default 500)")
    p.add_argument("--batch-size", type=int, help="training batch (default 64)")
    p.add_argument("--seed", type=int, help="seed of the synthetic faces, split and training (default 0)")
    p.add_argument("--threads", type=int,
                   help="PyTorch CPU threads (default 1, robust on a busy machine; 0: one per core)")
    p.add_argument("--init", help="where training starts: auto (the shipped network for the built-in model, else a "
                                  "new one; default), none (a new network) or a checkpoint file to fine-tune")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def resolve_config(args):
    """``DemoConfig()`` (or ``DemoConfig.quick()``), then ``--config``, then the options given, then ``--set``."""
    from ..app.demo_config import DemoConfig

    changes = {field: getattr(args, option.replace("-", "_")) for field, option in SIZE_OPTIONS.items()}
    changes.update(model=args.model, device=args.device, landmarks=args.landmarks,
                   images=None if args.images is None else str(args.images))
    layers = config_layers(args, changes, "lr=0.001")
    config = (DemoConfig.quick() if args.quick else DemoConfig()).layered(layers)
    if config.images is None and config.landmarks != "pts":
        raise ValueError("--landmarks applies to --images; synthetic photos come with their .pts files")
    if config.images is not None and not Path(config.images).is_dir():
        raise FileNotFoundError(f"--images {config.images}: no such folder")
    return config


def print_table(report: dict) -> None:
    """The figures table and the time per step, as plain text."""
    from diffface.app.report_html import D_DEFINITION, TABLE_COLUMNS, format_value

    headers = ["method"] + [header for _, header, _ in TABLE_COLUMNS]
    rows = [[row["method"]] + [format_value(row.get(key), fmt) for key, _, fmt in TABLE_COLUMNS]
            for row in report["table"]]
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    for line in [headers] + rows:
        print("  ".join(str(cell).rjust(width) if i else str(cell).ljust(width)
                        for i, (cell, width) in enumerate(zip(line, widths))))
    if report["ground_truth"]:
        print(D_DEFINITION)
    else:
        print("(no ground truth for these photos: only the 2D landmark error is measured)")
    train = report["steps"].get("train", {})
    if train.get("init_made_by"):
        print(f"network: fine-tuned from {train['init']} (made by: {train['init_made_by']})")
    print("seconds per step: " + ", ".join(f"{name} {f['seconds']:.0f}" for name, f in report["steps"].items())
          + f"; total {report['seconds_total']:.0f}")


def run(args) -> int:
    from ..demo import run_demo

    config = resolve_config(args)
    progress = (lambda name, seconds: None) if args.json else (
        lambda name, seconds: print(f"[demo] {name} done in {seconds:.1f} s", flush=True))
    report = run_demo(args.out, config, on_step=progress)
    if args.json:
        print_figures(report, True)
        return 0
    print("diffface demo")
    print_table(report)
    print(f"report: {Path(args.out) / 'report.html'} (and report.json)")
    return 0
