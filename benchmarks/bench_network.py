"""MobileFace size and eager CPU latency, against MobileNet v1 (width 1.0, 96 px) timed in the same run.

Reports the parameter count, the float32 file size of the saved state dict, the median and p95
latency of one image, and the latency and images/s of batches of 32 and 128 (eval mode,
``torch.inference_mode``). Timed in the same run as references: the same network with BatchNorm folded
into the convolutions (what an exporter ships) and MobileNet v1 at width 1.0 on the same 96-px input.

    python benchmarks/bench_network.py [--quick] [--json] [--json-out PATH] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from bench_output import add_output_arguments, emit
from diffface.networks import count_parameters, create_model, fold_batchnorm
from diffface.networks.export.bench import percentile, state_dict_bytes, time_calls


def latencies_ms(net: torch.nn.Module, batch: int, repeats: int, warmup: int = 3) -> list[float]:
    """Wall time of ``repeats`` forward passes on a random ``(batch, 3, 96, 96)`` input (ms)."""
    x = torch.rand(batch, 3, 96, 96)
    with torch.inference_mode():
        return [1000 * t for t in time_calls(lambda: net(x), repeats, warmup)]


def file_size_mb(net: torch.nn.Module) -> float:
    with tempfile.TemporaryDirectory() as folder:
        return state_dict_bytes(net, Path(folder), "state.pt") / 1e6


def measure(net: torch.nn.Module, repeats: int, batch_repeats: int) -> dict:
    single = latencies_ms(net, 1, repeats)
    out = {"ms_b1_median": statistics.median(single),
           "ms_b1_p95": percentile(single, 0.95)}
    for batch in (32, 128):
        ms = statistics.median(latencies_ms(net, batch, batch_repeats, warmup=1))
        out[f"ms_b{batch}"] = ms
        out[f"images_per_s_b{batch}"] = batch * 1000 / ms
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for CI)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, batch_repeats = (10, 2) if args.quick else (50, 5)
    torch.manual_seed(0)
    net = create_model("mobileface").eval()
    mobilenet = create_model("mobileface", width=32, pad_last_downsample=True).eval()
    ours, folded, reference = (measure(n, repeats, batch_repeats) for n in (net, fold_batchnorm(net), mobilenet))
    result = {
        "params": count_parameters(net), "size_mb_fp32": file_size_mb(net),
        "params_bytes_fp32_mb": count_parameters(net) * 4 / 1e6,
        "eager_cpu_ms": ours["ms_b1_median"], "eager_cpu_ms_p95": ours["ms_b1_p95"],
        **{f"eager_cpu_{k}": v for k, v in ours.items() if k not in ("ms_b1_median", "ms_b1_p95")},
        "folded_bn_cpu_ms": folded["ms_b1_median"], "folded_bn_cpu_ms_b128": folded["ms_b128"],
        "mobilenet_v1_params": count_parameters(mobilenet), "mobilenet_v1_size_mb_fp32": file_size_mb(mobilenet),
        "mobilenet_v1_cpu_ms": reference["ms_b1_median"], "mobilenet_v1_cpu_ms_b128": reference["ms_b128"],
        "threads": torch.get_num_threads(), "repeats": repeats,
    }

    def table(r: dict) -> None:
        print(f"MobileFace (width 10, 96 px) vs references, eager CPU, {r['threads']} threads, inference_mode")
        print(f"  params {r['params']:,}  state_dict file {r['size_mb_fp32']:.3f} MB "
              f"(weights alone {r['params_bytes_fp32_mb']:.3f} MB)")
        rows = [("MobileFace", r["eager_cpu_ms"], r["eager_cpu_ms_b128"], r["params"]),
                ("MobileFace, BN folded", r["folded_bn_cpu_ms"], r["folded_bn_cpu_ms_b128"], r["params"]),
                ("MobileNet v1 width 1.0", r["mobilenet_v1_cpu_ms"], r["mobilenet_v1_cpu_ms_b128"],
                 r["mobilenet_v1_params"])]
        print(f"  {'network':<24}{'batch 1 ms':>11}{'ratio':>7}{'batch 128 ms':>14}{'ratio':>7}{'params':>11}")
        for name, b1, b128, params in rows:
            print(f"  {name:<24}{b1:>11.2f}{b1 / r['eager_cpu_ms']:>7.2f}{b128:>14.1f}"
                  f"{b128 / r['eager_cpu_ms_b128']:>7.2f}{params:>11,}")
        print(f"  MobileFace p95 batch 1 {r['eager_cpu_ms_p95']:.2f} ms; batch 32 {r['eager_cpu_ms_b32']:.1f} ms "
              f"({r['eager_cpu_images_per_s_b32']:.0f} images/s); batch 128 {r['eager_cpu_images_per_s_b128']:.0f} images/s")

    emit(result, args, table)


if __name__ == "__main__":
    main()
