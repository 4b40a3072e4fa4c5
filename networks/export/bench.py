"""``diffface bench network``: size, parameters, batch-1 latency (median, p95) and batch-256 throughput of
every export format available on this machine, each checked for parity against eager PyTorch.

Formats with static shapes (ONNX, ExecuTorch, TensorRT) are exported at batch 1 for the latency and at
batch 256 for the throughput, as a deployment would; TorchScript (scripted, frozen, optimized for this
CPU), the lite interpreter and eager run any batch. ONNX Runtime is timed with 1 and 2 threads, and
on CUDA (eager, ONNX Runtime's CUDA provider, TensorRT fp32/fp16) when a GPU is there. Unavailable
formats are listed with the reason (the package to install, or no GPU). Timings are wall-clock per
call from Python (``time.perf_counter``), including the runtime's own input/output copies; the machine's
load average is recorded beside them, since other processes on the cores inflate every figure.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from diffface.threads import torch_threads

from ..mobileface import count_parameters
from ..predictor import FaceRegressor
from .backends import backend_available, import_backend
from .config import FORMATS, REQUIRES, SUFFIXES, TOLERANCES, ExportConfig
from .deploy import Deployable, make_deployable
from .exporter import export_deployable, load_exported
from .onnx import load_onnx
from .parity import compare
from .runtime import Runner, module_runner
from .torchscript import script

BENCH_FORMATS = ("eager", *FORMATS)  # which runtime each needs: config.REQUIRES
# the targets on a 2-core CPU
TARGETS = {"size_mb": 1.5, "onnxruntime_cpu_ms": 0.5, "torchscript_cpu_ms": 1.5}


@dataclass(frozen=True)
class BenchConfig:
    """Settings of :func:`bench_network`.

    Attributes:
        formats: which of :data:`BENCH_FORMATS` to time.
        repeats: timed batch-1 calls per variant (after ``warmup`` untimed ones).
        throughput_batch: batch of the throughput figure.
        throughput_repeats: timed calls at ``throughput_batch``.
        threads: intra-op threads of torch runtimes (None: torch's default, one per core).
        onnx_threads: onnxruntime thread counts to time.
    """

    formats: tuple[str, ...] = BENCH_FORMATS
    repeats: int = 300
    warmup: int = 30
    throughput_batch: int = 256
    throughput_repeats: int = 5
    threads: int | None = None
    onnx_threads: tuple[int, ...] = (1, 2)

    @classmethod
    def quick(cls, **overrides) -> "BenchConfig":
        return replace(cls(repeats=30, warmup=5, throughput_repeats=1), **overrides)

    def __post_init__(self):
        unknown = [f for f in self.formats if f not in BENCH_FORMATS]
        if unknown:
            raise ValueError(f"unknown bench formats {unknown}; choose from {', '.join(BENCH_FORMATS)}")
        if min(self.repeats, self.throughput_batch, self.throughput_repeats) < 1:
            raise ValueError(f"repeats, throughput_batch and throughput_repeats must be >= 1, got {self}")


@dataclass
class BenchRow:
    """Figures of one runtime variant."""

    format: str
    variant: str
    runtime: str
    device: str
    size_bytes: int
    latency_ms_median: float
    latency_ms_p95: float
    latency_ms_min: float
    throughput_per_s: float
    parity_max_abs_error: float
    parity_ok: bool
    parity_worst: str = ""  # the group nearest its bound, in its own units


@dataclass
class BenchResult:
    machine: dict
    network: dict
    rows: list[BenchRow] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def row(self, variant: str) -> BenchRow | None:
        return next((r for r in self.rows if r.variant == variant), None)

    def summary(self) -> dict:
        """The headline figures the issue asks for (ms at batch 1, median)."""
        def ms(variant: str) -> float | None:
            found = self.row(variant)
            return found.latency_ms_median if found else None

        onnx = [r for r in self.rows if r.format == "onnx" and r.device == "cpu"]
        best_onnx = min(onnx, key=lambda r: r.latency_ms_median) if onnx else None
        lite = self.row("mobile")
        out = {
            "size_mb": self.network["size_mb_float32"],
            "onnxruntime_cpu_ms": best_onnx.latency_ms_median if best_onnx else None,
            "onnxruntime_cpu_variant": best_onnx.variant if best_onnx else None,
            "torchscript_cpu_ms": ms("torchscript-frozen"),
            "torchscript_scripted_cpu_ms": ms("torchscript-scripted"),
            "torchscript_optimized_cpu_ms": ms("torchscript-optimized"),
            "eager_cpu_ms": ms("eager"),
            "executorch_cpu_ms": ms("executorch-xnnpack"),
            "lite_interpreter_ms": ms("mobile"),
            "lite_interpreter_ok": bool(lite and lite.parity_ok),
            "max_abs_parity_error": max((r.parity_max_abs_error for r in self.rows), default=None),
        }
        for row in self.rows:
            if row.format == "tensorrt":
                key = row.variant.replace("-", "_")
                out[f"{key}_ms"] = row.latency_ms_median
                out[f"{key}_throughput_per_s"] = row.throughput_per_s
        out["targets"] = {name: {"target": target, "measured": out.get(name),
                                 "met": out.get(name) is not None and out[name] <= target}
                          for name, target in TARGETS.items()}
        return out

    def to_dict(self) -> dict:
        return {**self.summary(), "machine": self.machine, "network": self.network,
                "results": [asdict(r) for r in self.rows], "unavailable": self.unavailable, "notes": self.notes}

    def table(self) -> str:
        lines = [f"{self.network['name']}: {self.network['params']:,} parameters, "
                 f"{self.network['size_mb_float32']:.3f} MB float32; {self.machine['cpu_count']} CPU cores, "
                 f"torch {self.machine['torch_threads']} threads; load average {self.machine['load_average_1min']:.1f} "
                 "at the start",
                 f"{'variant':<26} {'device':<6} {'size MB':>8} {'median ms':>10} {'p95 ms':>8} {'min ms':>8} "
                 f"{'img/s @256':>11} {'parity':>10}"]
        for r in self.rows:
            lines.append(f"{r.variant:<26} {r.device:<6} {r.size_bytes / 1e6:>8.3f} {r.latency_ms_median:>10.3f} "
                         f"{r.latency_ms_p95:>8.3f} {r.latency_ms_min:>8.3f} {r.throughput_per_s:>11.0f} "
                         f"{r.parity_max_abs_error:>10.1e}{'' if r.parity_ok else ' FAIL'}  worst: {r.parity_worst}")
        for name, reason in self.unavailable.items():
            lines.append(f"{name:<26} unavailable: {reason}")
        summary = self.summary()
        for name, target in summary["targets"].items():
            measured = target["measured"]
            lines.append(f"target {name} <= {target['target']}: "
                         f"{'n/a' if measured is None else f'{measured:.3f}'} ({'met' if target['met'] else 'MISSED'})")
        return "\n".join(lines)


def time_calls(call: Callable[[], object], repeats: int, warmup: int,
               sync: Callable[[], None] = lambda: None) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _measure(format_name: str, variant: str, runners: tuple[Runner, Runner], deployable: Deployable,
             size_bytes: int, config: BenchConfig, device: str = "cpu") -> BenchRow:
    """Parity, batch-1 latency with ``runners[0]`` and throughput with ``runners[1]`` (the batch-256 file)."""
    single_runner, batch_runner = runners
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    single = deployable.example_input(1, seed=3)
    batch = deployable.example_input(config.throughput_batch, seed=4)
    parity = compare(single_runner, deployable, {"random": deployable.example_input(4, seed=5)}, variant,
                     TOLERANCES["tensorrt-fp16" if variant.endswith("fp16") else format_name])
    worst = parity.worst
    worst_text = f"{worst.group} {worst.max_abs_error:.1e} {worst.unit} ({worst.ratio:.2g} x bound)" if worst else ""
    latencies = time_calls(lambda: single_runner(single), config.repeats, config.warmup, sync)
    batch_times = time_calls(lambda: batch_runner(batch), config.throughput_repeats, 1, sync)
    return BenchRow(format_name, variant, single_runner.name, device, size_bytes,
                    1e3 * statistics.median(latencies), 1e3 * percentile(latencies, 0.95), 1e3 * min(latencies),
                    config.throughput_batch / statistics.median(batch_times), parity.max_abs_error, parity.passed,
                    worst_text)


def _eager_runner(module: torch.nn.Module, device: str) -> Runner:
    return module_runner(module.to(device), f"torch {torch.__version__} eager", device=device)


def state_dict_bytes(module: torch.nn.Module, folder: Path, name: str = "eager_state_dict.pt") -> int:
    """Size on disk of ``module``'s state dict saved as ``folder/name`` (torch's archive repeats the name's
    stem in every entry, so the size depends on it slightly)."""
    path = folder / name
    torch.save(module.state_dict(), path)
    return path.stat().st_size


def bench_network(regressor: FaceRegressor, config: BenchConfig = BenchConfig(),
                  log: Callable[[str], None] = lambda message: None) -> BenchResult:
    """Time every available format of ``regressor`` (see the module docstring).

    Example:
        >>> result = bench_network(load_checkpoint("run/model.pt"), BenchConfig.quick())
        >>> print(result.table())
    """
    deployable = make_deployable(regressor)
    params = count_parameters(regressor.network)
    result = BenchResult(
        machine={"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                 "torch_threads": config.threads or torch.get_num_threads(), "torch": torch.__version__,
                 "python": platform.python_version(), "processor": platform.processor(),
                 "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        network={"name": regressor.network_name, "config": regressor.network_config, "params": params,
                 "size_mb_float32": params * 4 / 1e6, "outputs": regressor.layout.network_size})
    with tempfile.TemporaryDirectory() as tmp, torch_threads(config.threads):
        for format_name in config.formats:
            module = REQUIRES.get(format_name)
            ok, reason = backend_available(module) if module else (True, "")
            if not ok:
                result.unavailable[format_name] = reason
                continue
            log(f"bench: {format_name}")
            try:
                rows, notes = _bench_format(format_name, deployable, config, Path(tmp))
            except Exception as exc:  # one broken runtime must not hide the others' figures
                result.unavailable[format_name] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                continue
            result.rows += rows
            if notes:
                result.notes[format_name] = notes
    return result


def _export_pair(deployable: Deployable, export: ExportConfig, folder: Path, throughput_batch: int,
                 tag: str) -> tuple[Path, Path, list[str]]:
    """The batch-1 file (latency) and the batch-``throughput_batch`` file (throughput), both static."""
    paths = []
    notes: list[str] = []
    for batch in (1, throughput_batch):
        path = folder / f"{tag}-b{batch}{SUFFIXES[export.format]}"
        notes += export_deployable(deployable, replace(export, batch_size=batch, max_batch=max(batch, 1)), path)
        paths.append(path)
    return paths[0], paths[1], notes[:1]


def _bench_format(format_name: str, deployable: Deployable, config: BenchConfig,
                  folder: Path) -> tuple[list[BenchRow], list[str]]:
    """Rows (one per variant) and export notes of one format. Files with a static batch (ONNX, ExecuTorch,
    TensorRT) are exported twice, at batch 1 and at the throughput batch, as a deployment would."""
    if format_name == "eager":
        size = state_dict_bytes(deployable.module, folder)
        cpu = _eager_runner(deployable.module, "cpu")
        rows = [_measure("eager", "eager", (cpu, cpu), deployable, size, config)]
        if torch.cuda.is_available():
            cuda = _eager_runner(deployable.module, "cuda")
            rows.append(_measure("eager", "eager-cuda", (cuda, cuda), deployable, size, config, "cuda"))
            deployable.module.cpu()
        return rows, []
    if format_name in ("torchscript", "mobile"):
        return _bench_torchscript(format_name, deployable, config, folder)
    if format_name == "tensorrt":
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT imports but there is no CUDA GPU")
        rows, notes = [], []
        for fp16 in (False, True):
            variant = f"tensorrt-{'fp16' if fp16 else 'fp32'}"
            export = ExportConfig("tensorrt", fp16=fp16, engine_cache=str(folder / "engines"))
            single, batch, more = _export_pair(deployable, export, folder, config.throughput_batch, variant)
            notes += more
            runners = (load_exported(single, replace(export, batch_size=1)),
                       load_exported(batch, replace(export, batch_size=config.throughput_batch)))
            rows.append(_measure("tensorrt", variant, runners, deployable, single.stat().st_size, config, "cuda"))
        return rows, notes
    export = ExportConfig(format_name)
    single, batch, notes = _export_pair(deployable, export, folder, config.throughput_batch, format_name)
    size = single.stat().st_size
    batch_config = replace(export, batch_size=config.throughput_batch, max_batch=config.throughput_batch)
    if format_name == "executorch":
        runners = (load_exported(single, export), load_exported(batch, batch_config))
        return [_measure(format_name, "executorch-xnnpack", runners, deployable, size, config)], notes
    rows = [_measure("onnx", f"onnxruntime-{threads}thread",
                     (load_onnx(single, export, threads=threads), load_onnx(batch, batch_config, threads=threads)),
                     deployable, size, config) for threads in config.onnx_threads]
    ort = import_backend("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        cuda = ["CUDAExecutionProvider"]
        rows.append(_measure("onnx", "onnxruntime-cuda", (load_onnx(single, export, providers=cuda),
                                                          load_onnx(batch, batch_config, providers=cuda)),
                             deployable, size, config, "cuda"))
    return rows, notes


def _bench_torchscript(format_name: str, deployable: Deployable, config: BenchConfig,
                       folder: Path) -> tuple[list[BenchRow], list[str]]:
    """TorchScript scripted, frozen and optimized for this CPU (in memory: oneDNN-prepacked modules do not
    reload), or the lite interpreter's ``.ptl``; any batch runs through the same file."""
    if format_name == "mobile":
        export = ExportConfig("mobile")
        path = folder / "model.ptl"
        notes = export_deployable(deployable, export, path)
        runner = load_exported(path, export)
        return [_measure("mobile", "mobile", (runner, runner), deployable, path.stat().st_size, config)], notes
    rows = []
    for variant, freeze in (("torchscript-scripted", False), ("torchscript-frozen", True)):
        path = folder / f"{variant}.pt"
        script(deployable, freeze).save(str(path))
        runner = load_exported(path, ExportConfig("torchscript"))
        rows.append(_measure(format_name, variant, (runner, runner), deployable, path.stat().st_size, config))
    optimized = module_runner(script(deployable, for_this_cpu=True), "torch.jit optimize_for_inference (in memory)")
    rows.append(_measure(format_name, "torchscript-optimized", (optimized, optimized), deployable,
                         rows[-1].size_bytes, config))
    return rows, ["torch.jit.script, + torch.jit.freeze (frozen), + torch.jit.optimize_for_inference (optimized: "
                  "oneDNN, x86 torch builds only, cannot be saved and reloaded); all deprecated in torch 2.13"]
