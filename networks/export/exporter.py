"""One entry point for every format: prepare once (:mod:`.deploy`), write the file, load it in its
runtime and check parity against eager PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from diffface.morphable_model import MorphableModel

from ..checkpoint import load_checkpoint
from ..predictor import FaceRegressor
from .config import ExportConfig
from .deploy import Deployable, make_deployable
from .executorch import export_executorch, load_executorch
from .onnx import export_onnx, load_onnx
from .parity import ParityReport, compare, face_crops
from .runtime import Runner
from .tensorrt import export_tensorrt, load_tensorrt
from .torchscript import export_mobile, export_torchscript, load_mobile, load_torchscript

Exporter = Callable[[Deployable, ExportConfig, Path], list[str]]
Loader = Callable[..., Runner]

# format -> (write the file, load it in its runtime)
FORMAT_IO: dict[str, tuple[Exporter, Loader]] = {
    "torchscript": (export_torchscript, load_torchscript),
    "mobile": (export_mobile, load_mobile),
    "onnx": (export_onnx, load_onnx),
    "executorch": (export_executorch, load_executorch),
    "tensorrt": (export_tensorrt, load_tensorrt),
}


@dataclass
class ExportResult:
    """What :func:`export_checkpoint` wrote and how it compares with eager PyTorch."""

    path: Path
    size_bytes: int
    config: ExportConfig
    notes: list[str] = field(default_factory=list)
    parity: ParityReport | None = None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "size_bytes": self.size_bytes, "size_mb": self.size_bytes / 1e6,
                "config": self.config.to_dict(), "notes": self.notes,
                "parity": self.parity.to_dict() if self.parity else None}


def export_deployable(deployable: Deployable, config: ExportConfig, path: str | Path) -> list[str]:
    """Write ``deployable`` in ``config.format`` to ``path``. Returns the exporter's notes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FORMAT_IO[config.format][0](deployable, config, path)


def load_exported(path: str | Path, config: ExportConfig) -> Runner:
    """Load an exported file in the runtime of ``config.format``."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such exported model")
    return FORMAT_IO[config.format][1](path, config)


def parity_inputs(deployable: Deployable, config: ExportConfig,
                  real_images: Sequence[str | Path] = ()) -> dict[str, torch.Tensor]:
    """Random crops (``config.parity_samples``) and, when given, real face crops."""
    inputs = {"random": deployable.example_input(config.parity_samples, config.seed + 1)}
    if real_images:
        inputs["real"] = face_crops(real_images, deployable.input_size)
    return inputs


def check_parity(path: str | Path, deployable: Deployable, config: ExportConfig,
                 real_images: Sequence[str | Path] = ()) -> ParityReport:
    """Parity report of an exported file against ``deployable`` (not raising; see ``raise_if_failed``)."""
    runner = load_exported(path, config)
    return compare(runner, deployable, parity_inputs(deployable, config, real_images), config.tolerance_key,
                   config.tolerance)


def export_checkpoint(checkpoint: str | Path | FaceRegressor, out: str | Path, config: ExportConfig,
                      real_images: Sequence[str | Path] = (), morphable_model: MorphableModel | None = None,
                      parity: bool = True) -> ExportResult:
    """Export a checkpoint (or a loaded regressor) and check it against eager PyTorch.

    Raises :class:`~.parity.ParityError` when an output exceeds the format's tolerance (the report is in
    the message), :class:`~diffface.networks.CheckpointError` / ``FileNotFoundError`` for a bad checkpoint,
    and :class:`~.backends.BackendUnavailable` (an ``ImportError``) naming the package to install.

    Example:
        >>> result = export_checkpoint("run/model.pt", "model.onnx", ExportConfig("onnx"),
        ...                            real_images=["face.png"])
        >>> print(result.parity.table())
    """
    regressor = checkpoint if isinstance(checkpoint, FaceRegressor) else load_checkpoint(checkpoint)
    deployable = make_deployable(regressor, config.with_mesh, morphable_model)
    notes = export_deployable(deployable, config, out)
    result = ExportResult(Path(out), Path(out).stat().st_size, config, notes)
    if parity:
        result.parity = check_parity(out, deployable, config, real_images)
        result.parity.raise_if_failed()
    return result
