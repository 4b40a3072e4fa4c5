"""``diffface predict``: run a trained regressor checkpoint on photos (or ready crops), batched."""

from __future__ import annotations

import sys
from pathlib import Path

from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="predict parameters and meshes of photos with a trained checkpoint",
        description="For every image of IMAGES (a file or folder) write DIR/NAME.npz (params in the image's "
                    "camera, params_crop, param_names, crop_matrix, image_size, model) and DIR/NAME.obj or .ply "
                    "(the shape in model space, mm). Faces are found by landmarks and cropped as in training; "
                    "--cropped takes the images as ready network crops. Images of a folder that cannot be used "
                    "are skipped and listed with the reason in DIR/predict_report.json (exit code 1 if none "
                    "could be used).")
    p.add_argument("checkpoint", type=Path, help="a checkpoint (RUN/model.pt or RUN/checkpoints/last.pt)")
    p.add_argument("images", type=Path, help="an image file or a folder of images")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--landmarks", choices=["pts", "dlib", "fan", "auto"], default="pts",
                   help="landmark source for cropping: pts (annotations beside the images), dlib, fan, auto")
    p.add_argument("--annotations", type=Path, help="pts: folder of annotation files (default: beside the images)")
    p.add_argument("--cropped", action="store_true", help="the images are already S x S network crops")
    p.add_argument("--crop-scale", type=float, default=1.25, help="crop side over the landmarks' extent")
    p.add_argument("--meshes", choices=["none", "obj", "ply"], default="obj", help="mesh format (default: obj)")
    p.add_argument("--model", help="morphable-model file for the meshes (default: the one the checkpoint names)")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass (default: 64)")
    p.add_argument("--max-image-pixels", type=int, metavar="N",
                   help="skip images of more pixels (width x height), unread (default: Pillow's limit, 89,478,485; "
                        "0: no limit)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from diffface.landmarks import InputLimits, left_out_note
    from diffface.morphable_model import load_morphable_model
    from diffface.networks.checkpoint import load_checkpoint
    from diffface.networks.predict import PredictConfig, predict_images

    limits = InputLimits() if args.max_image_pixels is None else InputLimits(max_image_pixels=args.max_image_pixels)
    regressor = load_checkpoint(args.checkpoint)
    config = PredictConfig(landmarks=args.landmarks, cropped=args.cropped, crop_scale=args.crop_scale,
                           batch_size=args.batch_size, meshes=args.meshes, limits=limits,
                           detector_options={"annotation_dir": str(args.annotations)} if args.annotations else None)
    model = None
    if args.meshes != "none":
        spec = args.model or regressor.model_identity.spec
        if not spec:
            raise ValueError(f"{args.checkpoint}: names no morphable-model file; pass --model")
        model = load_morphable_model(spec)
    start = time.perf_counter()
    prediction = predict_images(regressor, args.images, args.out, config, model)
    seconds = time.perf_counter() - start
    if not args.json:
        for failure in prediction.failures:
            print(f"skipped: {failure['reason']}")
        note = left_out_note(args.images, prediction.left_out)
        if note:
            print(note)
    ok, failed = len(prediction.written), len(prediction.failures)
    print_figures({"images": ok + failed, "predicted": ok, "failed": failed,
                   "left_out": sum(prediction.left_out.values()), "seconds": seconds, "images_per_s": ok / seconds,
                   "out": str(args.out), "report": str(prediction.report)}, args.json, title="diffface predict")
    if failed and not ok:
        print(f"diffface predict: error: all {failed} images failed (reasons in {prediction.report})",
              file=sys.stderr)
        return 1
    return 0
