"""Export settings and the per-format facts (file suffix, parity tolerance, what to install).

Parity tolerances (documented here, applied by :mod:`.parity`): an exported output passes when its
largest absolute difference from eager PyTorch is at most ``atol + rtol · max|eager output|``. The
outputs are *denormalised* parameters (translation ~600 mm, focal ~500 px) and vertices in mm, so the
bound scales with the output's magnitude; float32 runtimes reorder sums (1e-5 relative), fp16
TensorRT engines keep ~3 significant digits (1e-2 relative).

==============  ========  =========  ======  ======================================================
format          suffix    precision  rtol    runtime
==============  ========  =========  ======  ======================================================
torchscript     .pt       fp32       1e-5    ``torch.jit.load`` (scripted, frozen)
mobile          .ptl      fp32       1e-5    ``torch.jit.mobile._load_for_lite_interpreter``
onnx            .onnx     fp32       1e-5    onnxruntime ``InferenceSession`` (CPU, CUDA if present)
executorch      .pte      fp32       1e-5    ``executorch.runtime`` (XNNPACK delegate)
tensorrt        .engine   fp32/fp16  1e-4 /  TensorRT (ONNX parser or Torch-TensorRT), torch2trt
                                     1e-2
==============  ========  =========  ======  ======================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_OPSET = 18  # ONNX opset: the torch.export-based exporter writes >= 18; TensorRT 10 parses 9..20 (8.6: --opset 17)
FORMATS = ("torchscript", "mobile", "onnx", "executorch", "tensorrt")


@dataclass(frozen=True)
class Tolerance:
    """Parity bound ``atol + rtol · max|reference|`` on the max abs error of one output."""

    atol: float
    rtol: float

    def bound(self, reference_scale: float) -> float:
        return self.atol + self.rtol * reference_scale


FP32_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-5)
TOLERANCES = {
    "eager": FP32_TOLERANCE,
    "torchscript": FP32_TOLERANCE,
    "mobile": FP32_TOLERANCE,
    "onnx": FP32_TOLERANCE,
    "executorch": FP32_TOLERANCE,
    "tensorrt": Tolerance(atol=1e-3, rtol=1e-4),       # TF32 / tactic reordering
    "tensorrt-fp16": Tolerance(atol=1e-2, rtol=1e-2),  # 10-bit mantissa
}
SUFFIXES = {"torchscript": ".pt", "mobile": ".ptl", "onnx": ".onnx", "executorch": ".pte", "tensorrt": ".engine"}


@dataclass(frozen=True)
class ExportConfig:
    """How to export a checkpoint (``diffface export`` options).

    Attributes:
        format: one of :data:`FORMATS`.
        with_mesh: add the morphable-model head; the file then also outputs vertices (B, V, 3) in mm.
        fp16: TensorRT only: build a half-precision engine.
        opset: ONNX opset (also the graph TensorRT's ONNX parser reads).
        batch_size: the static batch of the exported input (TensorRT and ONNX need static shapes).
        dynamic_batch: export a batch dimension of any size from 1 to ``max_batch`` instead.
        max_batch: upper bound of the dynamic batch (ExecuTorch and TensorRT profiles need one).
        engine_cache: folder of built TensorRT engines (None: no cache).
        tensorrt_backend: ``"onnx-parser"`` (the ``tensorrt`` package), ``"torch-tensorrt"`` or ``"torch2trt"``.
        parity_samples: random inputs of the parity check.
        seed: seed of the random parity inputs.
    """

    format: str = "onnx"
    with_mesh: bool = False
    fp16: bool = False
    opset: int = DEFAULT_OPSET
    batch_size: int = 1
    dynamic_batch: bool = False
    max_batch: int = 256
    engine_cache: str | None = None
    tensorrt_backend: str = "onnx-parser"
    parity_samples: int = 4
    seed: int = 0

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"unknown export format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.fp16 and self.format != "tensorrt":
            raise ValueError(f"--fp16 applies to TensorRT engines only, not to {self.format!r}")
        if self.batch_size < 1 or self.max_batch < self.batch_size or self.parity_samples < 1:
            raise ValueError(f"need 1 <= batch_size <= max_batch and parity_samples >= 1, got {self}")
        if self.tensorrt_backend not in ("onnx-parser", "torch-tensorrt", "torch2trt"):
            raise ValueError(f"unknown TensorRT backend {self.tensorrt_backend!r}; choose onnx-parser, "
                             "torch-tensorrt or torch2trt")

    @property
    def tolerance_key(self) -> str:
        return "tensorrt-fp16" if self.fp16 else self.format

    @property
    def tolerance(self) -> Tolerance:
        return TOLERANCES[self.tolerance_key]

    def default_path(self, checkpoint: str | Path) -> Path:
        return Path(checkpoint).with_suffix(SUFFIXES[self.format])

    def to_dict(self) -> dict:
        return asdict(self)
