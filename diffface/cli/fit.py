"""``diffface fit``: fit the morphable model to a folder (or list file) of photos, resumably, on one or more ranks."""

from __future__ import annotations

import sys
from pathlib import Path

from .config_args import add_config_arguments
from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fit", help="fit the model to a folder or list of photos (landmarks, then texture), resumable",
        description="Fit every image of INPUT and write DIR/results/<image>.npz (parameters, fitted landmarks, "
                    "energies per term, flags), DIR/log_rank<r>.jsonl, DIR/summary.json, DIR/config.yaml and "
                    "DIR/tensorboard. Bad images are recorded with the reason and skipped; a re-run skips images "
                    "already done. Several processes: torchrun --nproc_per_node=N -m diffface.cli.main fit ... "
                    "Settings: defaults < --config YAML < the options below < --set key=value.")
    p.add_argument("input", type=Path, help="folder of images, or a text file listing image paths (one a line, "
                                            "relative to the list file's folder)")
    p.add_argument("--out", type=Path, required=True, help="output folder (a re-run into it resumes)")
    p.add_argument("--model", help="builtin or a morphable-model file (default: builtin)")
    p.add_argument("--landmarks", choices=["pts", "dlib", "fan", "auto"],
                   help="landmark source: pts (annotations beside the images), dlib, fan, auto (default: pts)")
    p.add_argument("--stages", help="landmarks or landmarks,texture (default: landmarks)")
    add_config_arguments(p, "FitJobConfig", "DIR/config.yaml", "override one setting, dotted keys, repeatable: "
                         "--set texture.norm=l1 --set landmarks.rounds=3")
    p.add_argument("--batch-size", type=int, help="images per batch (default: 32)")
    p.add_argument("--workers", type=int, help="DataLoader workers reading and landmarking images (default: 2)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu; ranks use cuda:LOCAL_RANK)")
    p.add_argument("--meshes", choices=["none", "obj", "ply"], help="also write DIR/meshes/<image>.obj or .ply")
    p.add_argument("--annotations", type=Path, help="pts: folder of annotation files (default: beside the images)")
    p.add_argument("--retry-failed", action="store_true", help="re-try images an earlier run recorded as bad")
    p.add_argument("--max-image-pixels", type=int, metavar="N",
                   help="record images of more pixels (width x height) as bad, unread (default: Pillow's limit, "
                        "89,478,485; 0: no limit; the other checks: --set limits.min_image_side=32 ...)")
    p.add_argument("--group-by", choices=["none", "folder", "csv", "video"],
                   help="fit subjects, not single images: folder (a subfolder per person or video, frames sorted by "
                        "name), csv (INPUT or --groups-csv: image,subject rows), video (INPUT: a video or a folder of "
                        "videos; frames extracted to DIR/frames); one shared identity (and albedo) per subject, "
                        "written to DIR/identities/<subject>.npz (default: none)")
    p.add_argument("--groups-csv", type=Path, help="with --group-by csv: the image,subject CSV (default: INPUT)")
    p.add_argument("--smooth", action="store_true",
                   help="grouped: each subject is a video: one camera and a smoothness prior on pose, translation "
                        "and expression between neighbouring frames (weights: --set sequence.smooth_rotation=...)")
    p.add_argument("--video-stride", type=int, metavar="N", help="--group-by video: fit every N-th frame (default 1)")
    p.add_argument("--overlays", choices=["none", "gif", "png", "mp4", "webm"],
                   help="grouped: write DIR/overlays/<subject>.<format>, the fitted mesh over the frames")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write DIR/tensorboard")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (and no progress bar)")
    p.set_defaults(func=run)


def resolve_config(args):
    """The job's settings: defaults, then ``--config``, then the options given, then ``--set``."""
    from diffface.fitting.job import FitJobConfig

    config = FitJobConfig.from_yaml(args.config) if args.config else FitJobConfig()
    given = {"model": args.model, "detector": args.landmarks, "stages": args.stages, "batch_size": args.batch_size,
             "num_workers": args.workers, "device": args.device, "save_meshes": args.meshes}
    changes = {k: v for k, v in given.items() if v is not None}
    if args.annotations:
        changes["detector_options"] = {"annotation_dir": str(args.annotations)}
    if args.retry_failed:
        changes["retry_failed"] = True
    if args.max_image_pixels is not None:
        changes["limits"] = {"max_image_pixels": args.max_image_pixels}
    if args.no_tensorboard:
        changes["tensorboard"] = False
    grouped = {"group_by": args.group_by, "groups_csv": str(args.groups_csv) if args.groups_csv else None,
               "video_stride": args.video_stride, "save_overlays": args.overlays}
    changes.update({k: v for k, v in grouped.items() if v is not None})
    if args.smooth:
        changes["sequence"] = {"smooth": True}
    if args.json:
        changes["progress"] = False
    return FitJobConfig.from_dict(changes, config).with_overrides(args.overrides)


def run(args) -> int:
    from diffface.fitting.job import run_fit_job
    from diffface.landmarks import left_out_note

    config = resolve_config(args)
    figures = run_fit_job(args.input, args.out, config)
    if figures.get("summary") is None:  # ranks other than 0 stay quiet
        return 0
    summary = figures["summary"]
    out = {"images": summary["images"], "results": summary["results"], "failed": summary["failed"],
           "fitted_now": sum(r["fitted"] for r in summary["ranks"]),
           **({"subjects_fitted_now": sum(r["subjects"] for r in summary["ranks"])}
              if "subjects" in summary["ranks"][0] else {}),
           "skipped_done": sum(r["skipped"] for r in summary["ranks"]),
           "images_per_s": figures["images_per_s"], "world_size": figures["world_size"],
           **{f"energy/{k}": v for k, v in summary["energy_mean"].items()},
           "out": str(args.out)}
    if not args.json:
        for rank in summary["ranks"]:
            for refit in rank.get("refit", []):
                print(f"fitted again: {refit['reason']}")
        for failure in summary["failures"][:20]:
            print(f"skipped: {failure['reason']}")
        if len(summary["failures"]) > 20:
            print(f"... and {len(summary['failures']) - 20} more in {Path(args.out) / 'summary.json'}")
        note = left_out_note(args.input, summary["left_out"])
        if note:
            print(note)
    out["left_out"] = sum(summary["left_out"].values())
    print_figures(out, args.json, title="diffface fit")
    if summary["results"] == 0 and summary["failed"] > 0:
        print(f"diffface fit: error: all {summary['failed']} images failed (reasons in "
              f"{Path(args.out) / 'summary.json'})", file=sys.stderr)
        return 1
    return 0
