"""``diffface bench network``: size, parameters, latency and throughput of every export format here
(the logic is :mod:`diffface.networks.export.bench`)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (network: export formats' size, latency, throughput)",
                       description="Benchmarks. 'network': model size on disk, parameters, batch-1 latency (median, "
                                   "p95) and batch-256 throughput for every export format available here.")
    kinds = p.add_subparsers(dest="bench_kind", metavar="<benchmark>", required=True)
    network = kinds.add_parser("network", help="time the regressor in every export format",
                               description="Time eager, TorchScript (scripted, frozen), TorchScript-mobile, ONNX "
                                           "Runtime (1 and 2 threads), ExecuTorch and TensorRT where available; "
                                           "unavailable ones are listed with the reason.")
    network.add_argument("--ckpt", type=Path, help="checkpoint (default: a freshly initialised mobileface)")
    network.add_argument("--formats", default=None,
                         help="comma-separated subset of eager,torchscript,mobile,onnx,executorch,tensorrt")
    network.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    network.add_argument("--throughput-batch", type=int, default=256, help="batch of the throughput figure (256)")
    network.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisy figures)")
    network.add_argument("--json", action="store_true", help="print the figures as JSON")
    network.set_defaults(func=run)


def run(args) -> int:
    import json

    from diffface.networks.export.bench import BENCH_FORMATS, BenchConfig, bench_network

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip()) if args.formats else BENCH_FORMATS
    config = (BenchConfig.quick if args.quick else BenchConfig)(formats=formats, threads=args.threads,
                                                                throughput_batch=args.throughput_batch)
    regressor = _regressor(args.ckpt)
    result = bench_network(regressor, config, log=lambda message: print(message, file=sys.stderr))
    print(json.dumps(result.to_dict(), default=str) if args.json else result.table())
    return 0


def _regressor(checkpoint: Path | None):
    from diffface.networks import load_checkpoint

    if checkpoint is not None:
        return load_checkpoint(checkpoint)
    from diffface.networks.export.deploy import fresh_regressor

    return fresh_regressor()
