"""``diffface build-dataset``: training pairs (crop, parameters in the crop camera, ground truth) from fits."""

from __future__ import annotations

from pathlib import Path

from .config_args import add_config_arguments
from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser(
        "build-dataset", help="turn fits (or synthetic faces, or a 300W-style photo folder) into training pairs",
        description="Write DATASET/items/<name>.png (the face crop) + .npz (parameters re-expressed in the crop's "
                    "camera, ground-truth vertices and projections, landmarks), DATASET/index.json (train/val "
                    "split, fit quality and automatic flags), DATASET/previews/ for `diffface curate`, and "
                    "DATASET/skipped.json (unusable faces and why). SOURCE is a `diffface fit` folder, a "
                    "`diffface synth` folder, or folders of photos with 300W .pts files (fitted into DATASET/fits "
                    "first). A re-run resumes. Settings: defaults < --config YAML < the options below < --set.")
    p.add_argument("source", type=Path, help="fit-job folder, synthetic benchmark folder, or photos with .pts files")
    p.add_argument("--out", type=Path, required=True, help="dataset folder (new, empty, or one to resume)")
    add_config_arguments(p, "BuildConfig", "DATASET/build.yaml",
                         "override one setting, dotted keys, repeatable: --set quality.max_abs_yaw_deg=50")
    p.add_argument("--crop-size", type=int, help="side of the crops in pixels (default: 96)")
    p.add_argument("--val-fraction", type=float, help="share of items in the val split (default: 0.1)")
    p.add_argument("--seed", type=int, help="seed of the split (default: 0)")
    p.add_argument("--model", help="photo folders: the model to fit (builtin or a file; default: builtin)")
    p.add_argument("--stages", help="photo folders: fit stages, landmarks or landmarks,texture (default: landmarks)")
    p.add_argument("--no-previews", action="store_true", help="do not render the curation previews")
    p.add_argument("--device", help="cpu or cuda (default: cpu)")
    p.add_argument("--max-image-pixels", type=int, metavar="N",
                   help="skip photos of more pixels (width x height), unread (default: Pillow's limit, 89,478,485; "
                        "0: no limit; the other checks: --set limits.min_image_side=32 ...)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (and no progress bar)")
    p.set_defaults(func=run)


def resolve_config(args):
    """Defaults, then ``--config``, then the options given, then ``--set``."""
    from diffface.app.dataset.build import BuildConfig

    config = BuildConfig.from_yaml(args.config) if args.config else BuildConfig()
    given = {"crop_size": args.crop_size, "val_fraction": args.val_fraction, "seed": args.seed, "model": args.model,
             "fit_stages": args.stages, "device": args.device}
    changes = {k: v for k, v in given.items() if v is not None}
    if args.no_previews:
        changes["previews"] = False
    if args.max_image_pixels is not None:
        changes["limits"] = {"max_image_pixels": args.max_image_pixels}
    return BuildConfig.from_dict(changes, config).with_overrides(args.overrides).validate()


def run(args) -> int:
    from tqdm import tqdm

    from diffface.app.dataset.build import SKIPPED_NAME, build_dataset
    from diffface.app.dataset.sources import source_kind
    from diffface.landmarks import left_out_note

    config = resolve_config(args)
    source_kind(args.source)  # a bad source is one clear line, before any progress bar
    with tqdm(desc="dataset items", unit="item", disable=args.json) as bar:
        summary = build_dataset(args.source, args.out, config, progress=bar.update)
    skipped = summary.pop("skipped_items")
    if not args.json:
        for record in skipped[:20]:
            print(f"skipped {record.get('key')}: {record.get('reason')}")
        if len(skipped) > 20:
            print(f"... and {len(skipped) - 20} more in {Path(args.out) / SKIPPED_NAME}")
        note = left_out_note(args.source, summary["left_out"])
        if note:
            print(note)
    summary["left_out"] = sum(summary["left_out"].values())
    flagged = summary.pop("flagged")
    summary.update({f"flagged/{k}": v for k, v in sorted(flagged.items())})
    print_figures(summary, args.json, title="diffface build-dataset")
    return 0
