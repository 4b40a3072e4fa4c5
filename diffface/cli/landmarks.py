"""``diffface landmarks``: 68-point landmarks for a folder of photos, as ``.pts`` files."""

from __future__ import annotations

import sys
from pathlib import Path

from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser("landmarks", help="detect (or read) 68 landmarks for a folder of images, write .pts files",
                       description="Write DIR/<image>.pts (300W format, largest face; with --all-faces also "
                                   "<image>_face1.pts, ...), DIR/<image>.json, optional overlays, and "
                                   "DIR/landmarks_report.json recording every image (bad ones with the reason). "
                                   "Re-running skips images already done.")
    p.add_argument("images", type=Path, help="folder of images (.png, .jpg, ...)")
    p.add_argument("--detector", default="auto", choices=["auto", "fan", "dlib", "pts"],
                   help="fan (face-alignment), dlib, pts (annotations beside the images), or auto: fan when its "
                        "weights are present, else dlib")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--all-faces", action="store_true", help="keep every face, not only the largest")
    p.add_argument("--overlay", action="store_true", help="also write overlays/<image>.png")
    p.add_argument("--overwrite", action="store_true", help="redo images already done")
    p.add_argument("--weights", type=Path, help="FAN: the TorchScript landmark model file (default: torch hub cache)")
    p.add_argument("--face-detector-weights", type=Path, help="FAN: the S3FD face detector weights file")
    p.add_argument("--predictor", type=Path, help="dlib: the 68-point shape predictor .dat")
    p.add_argument("--annotations", type=Path, help="pts: folder of annotation files (default: beside the images)")
    p.add_argument("--device", default="cpu", help="FAN: cpu or cuda")
    p.add_argument("--max-image-pixels", type=int, metavar="N",
                   help="record images of more pixels (width x height) as failed, unread (default: Pillow's "
                        "limit, 89,478,485; 0: no limit)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def detector_options(args) -> dict:
    """The options of the chosen detector that were given on the command line."""
    if args.detector == "pts":
        return {"annotation_dir": args.annotations} if args.annotations else {}
    if args.detector == "dlib":
        return {"predictor_path": args.predictor} if args.predictor else {}
    options = {"device": args.device}
    if args.weights:
        options["weights"] = args.weights
    if args.face_detector_weights:
        options["face_detector_weights"] = args.face_detector_weights
    return options


def run(args) -> int:
    from tqdm import tqdm

    from ..landmarks import (InputLimits, LandmarkJobConfig, landmark_images, left_out_note, make_detector,
                             scan_image_folder)

    scan = scan_image_folder(args.images)
    if not scan.images:
        raise FileNotFoundError(f"{args.images}: no images (.png, .jpg, .jpeg, .bmp, .tif, .webp, .ppm, ...) in "
                                "this folder")
    limits = InputLimits() if args.max_image_pixels is None else InputLimits(max_image_pixels=args.max_image_pixels)
    detector = make_detector(args.detector, **detector_options(args))
    config = LandmarkJobConfig(all_faces=args.all_faces, overlay=args.overlay, overwrite=args.overwrite, limits=limits)
    note = left_out_note(args.images, scan.left_out)
    if note and not args.json:
        print(note)
    with tqdm(total=len(scan.images), desc=f"landmarks ({detector.name})", unit="img", disable=args.json) as bar:
        report = landmark_images(scan.images, detector, args.out, config, progress=bar.update, left_out=scan.left_out)
    summary = {key: report[key] for key in ("detector", "images", "ok", "skipped", "failed", "faces", "images_per_s")}
    summary["left_out"] = sum(scan.left_out.values())
    summary["report"] = str(Path(args.out) / "landmarks_report.json")
    if not args.json:
        for failure in report["failures"]:
            print(f"skipped: {failure['reason']}")
    print_figures(summary, args.json, title="diffface landmarks")
    if report["failed"] and report["failed"] == report["images"]:
        print(f"diffface landmarks: error: all {report['images']} images failed (reasons in {summary['report']})",
              file=sys.stderr)
        return 1
    return 0
