"""``diffface export``: a checkpoint as TorchScript, TorchScript-mobile, ONNX, ExecuTorch or a TensorRT engine,
checked against eager PyTorch (the logic is :mod:`diffface.networks.export`)."""

from __future__ import annotations

from pathlib import Path

from .output import print_figures


def add_parser(sub) -> None:
    # choices and defaults are checked by ExportConfig: building the parser must not import the networks
    p = sub.add_parser(
        "export", help="export a trained checkpoint for deployment (with a parity check against eager)",
        description="Write CKPT as a deployable file that outputs the final (denormalised) parameters, and with "
                    "--with-mesh the vertices too; load it in its runtime and compare it with eager PyTorch on random "
                    "crops (and on --image photos, cropped by the .pts beside them). Fails when the max abs error "
                    "exceeds the format's documented tolerance (docs/deployment.md).")
    p.add_argument("checkpoint", type=Path, help="a checkpoint (RUN/model.pt)")
    p.add_argument("--format", required=True, help="torchscript, mobile (.ptl), onnx, executorch (.pte) or tensorrt")
    p.add_argument("--out", type=Path, help="output file (default: CKPT with the format's suffix)")
    p.add_argument("--with-mesh", action="store_true", help="also output vertices (B, V, 3) from the morphable model")
    p.add_argument("--fp16", action="store_true", help="TensorRT: half-precision engine")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18, the torch.export-based exporter; 17 for "
                                             "TensorRT 8.x, through the legacy exporter)")
    p.add_argument("--batch", type=int, default=1, help="static batch of the exported input (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch from 1 to --max-batch instead")
    p.add_argument("--max-batch", type=int, default=256, help="upper bound of --dynamic-batch (default 256)")
    p.add_argument("--engine-cache", type=Path, help="TensorRT: folder of cached engines")
    p.add_argument("--tensorrt-backend", choices=["onnx-parser", "torch-tensorrt", "torch2trt"], default="onnx-parser",
                   help="TensorRT front end (default: the tensorrt ONNX parser)")
    p.add_argument("--model", help="morphable-model file for --with-mesh (default: the one the checkpoint names)")
    p.add_argument("--image", type=Path, action="append", default=[],
                   help="a photo for the parity check on real faces (landmarks from the .pts beside it); repeatable")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffface.networks.export import ExportConfig, ParityError, export_checkpoint

    opset = {} if args.opset is None else {"opset": args.opset}
    config = ExportConfig(format=args.format, with_mesh=args.with_mesh, fp16=args.fp16, **opset,
                          batch_size=args.batch, dynamic_batch=args.dynamic_batch, max_batch=args.max_batch,
                          engine_cache=str(args.engine_cache) if args.engine_cache else None,
                          tensorrt_backend=args.tensorrt_backend)
    morphable_model = None
    if args.model:
        from diffface.morphable_model import load_morphable_model

        morphable_model = load_morphable_model(args.model)
    out = args.out or config.default_path(args.checkpoint)
    try:
        result = export_checkpoint(args.checkpoint, out, config, real_images=args.image,
                                   morphable_model=morphable_model)
    except ParityError:
        print(f"diffface export: wrote {out}, but it FAILED the parity check:")
        raise
    if args.json:
        print_figures(result.to_dict(), True)
        return 0
    print_figures({"out": str(result.path), "size_mb": result.size_bytes / 1e6, "format": args.format,
                   "outputs": "params, vertices" if args.with_mesh else "params"}, False, title="diffface export")
    for note in result.notes:
        print(f"  note: {note}")
    print(result.parity.table())
    return 0
