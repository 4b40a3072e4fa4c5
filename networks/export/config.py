"""Export settings and the per-format facts (file suffix, parity tolerance, what to install).

Parity tolerances (documented here, applied by :mod:`.parity`): each parameter group of an exported
model's output is compared with eager PyTorch in its own units, and passes when its largest absolute
difference is at most the group's bound: angles in radians, the identity and expression coefficients
in units of each mode's prior σ, translation in mm, focal length and principal point in pixels, and the
vertices of the mesh head in mm. (A bound scaled by the largest output, translation ~600 mm, let fp16
pass with errors of 6 rad on the angles.) float32 runtimes reorder sums; fp16 TensorRT engines keep
about 3 significant digits in the convolutions, whose outputs the bounds are set from (an fp16 copy of
the network's convolutions measured 0.01 rad, 0.1 σ, 0.03 mm / px on the test checkpoint).

==============  ========  =========  =============================================================
format          suffix    precision  runtime
==============  ========  =========  =============================================================
torchscript     .pt       fp32       ``torch.jit.load`` (scripted, frozen)
mobile          .ptl      fp32       ``torch.jit.mobile._load_for_lite_interpreter``
onnx            .onnx     fp32       onnxruntime ``InferenceSession`` (CPU, CUDA if present)
executorch      .pte      fp32       ``executorch.runtime`` (XNNPACK delegate)
tensorrt        .engine   fp32/fp16  TensorRT (ONNX parser or Torch-TensorRT), torch2trt
==============  ========  =========  =============================================================

=================  ==========  ==========  ==============  =============  ===========
bound              angles rad  coeffs σ    translation mm  focal, pp px   vertices mm
=================  ==========  ==========  ==============  =============  ===========
fp32 runtimes      1e-4        1e-3        1e-2            1e-2           1e-3
TensorRT fp32      2e-3        2e-2        0.2             0.2            0.1
TensorRT fp16      3e-2        0.3         2               2              1
=================  ==========  ==========  ==============  =============  ===========
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_OPSET = 18  # ONNX opset: the torch.export-based exporter writes >= 18; TensorRT 10 parses 9..20 (8.6: --opset 17)


# the unit of each group of the parameter vector (diffface.params.ParamLayout) and of the mesh head's output
GROUP_UNITS = {"alpha_id": "sigma", "alpha_exp": "sigma", "translation": "mm", "angles": "rad", "focal": "px",
               "principal_point": "px", "vertices": "mm"}


@dataclass(frozen=True)
class Tolerance:
    """Largest absolute error allowed in each output group, in the group's own units.

    Attributes:
        angles_rad: pitch, yaw, roll (radians).
        coefficients_sigma: identity and expression coefficients, each divided by its mode's prior σ.
        translation_mm: camera translation (mm).
        camera_px: focal length and principal point (pixels).
        vertices_mm: vertices of the mesh head (mm).

    Example:
        >>> TOLERANCES["tensorrt-fp16"].bound("angles")
        0.03
    """

    angles_rad: float
    coefficients_sigma: float
    translation_mm: float
    camera_px: float
    vertices_mm: float

    def bound(self, group: str) -> float:
        """The bound of a group of :data:`GROUP_UNITS` (``alpha_id``, ..., ``vertices``)."""
        unit = GROUP_UNITS.get(group)
        if unit is None:
            raise ValueError(f"no parity bound for output group {group!r}; groups: {', '.join(GROUP_UNITS)}")
        if unit == "sigma":
            return self.coefficients_sigma
        return {"angles": self.angles_rad, "translation": self.translation_mm, "vertices": self.vertices_mm}.get(
            group, self.camera_px)


FP32_TOLERANCE = Tolerance(angles_rad=1e-4, coefficients_sigma=1e-3, translation_mm=1e-2, camera_px=1e-2,
                           vertices_mm=1e-3)
TOLERANCES = {
    "eager": FP32_TOLERANCE,
    "torchscript": FP32_TOLERANCE,
    "mobile": FP32_TOLERANCE,
    "onnx": FP32_TOLERANCE,
    "executorch": FP32_TOLERANCE,
    # TensorRT may run fp32 convolutions in TF32 (10-bit mantissa inputs) and picks its own tactics
    "tensorrt": Tolerance(angles_rad=2e-3, coefficients_sigma=2e-2, translation_mm=0.2, camera_px=0.2,
                          vertices_mm=0.1),
    # fp16 convolutions; the last linear layer (denormalisation folded, t_z ~600 mm) and the mesh head stay fp32
    "tensorrt-fp16": Tolerance(angles_rad=3e-2, coefficients_sigma=0.3, translation_mm=2.0, camera_px=2.0,
                               vertices_mm=1.0),
}


@dataclass(frozen=True)
class ExportFormat:
    """The facts of one export format (the code that writes and loads it: ``exporter.FORMAT_IO``).

    Attributes:
        name: the ``--format`` value.
        suffix: the file's suffix.
        runtime_module: the module its runtime needs (checked with ``backend_available``); None: torch alone.
        tolerance: the parity bound of its fp32 files (:data:`TOLERANCES`).
    """

    name: str
    suffix: str
    runtime_module: str | None
    tolerance: Tolerance


#: every export format, in the CLI's order: the one table the exporter, the benchmark and the demo read
EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("torchscript", ".pt", None, TOLERANCES["torchscript"]),
    ExportFormat("mobile", ".ptl", None, TOLERANCES["mobile"]),
    ExportFormat("onnx", ".onnx", "onnxruntime", TOLERANCES["onnx"]),
    ExportFormat("executorch", ".pte", "executorch.runtime", TOLERANCES["executorch"]),
    ExportFormat("tensorrt", ".engine", "tensorrt", TOLERANCES["tensorrt"]),
)}
FORMATS = tuple(EXPORT_FORMATS)
SUFFIXES = {name: f.suffix for name, f in EXPORT_FORMATS.items()}
REQUIRES = {name: f.runtime_module for name, f in EXPORT_FORMATS.items() if f.runtime_module}


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
