"""Parity of an exported model with eager PyTorch, on random crops and on real face crops.

The reference is the eager :class:`~.deploy.Deployable` module (BatchNorm and normalisation folded, which
:func:`~diffface.networks.fold_batchnorm`'s tests tie to the checkpoint's network). Each output passes when its
max abs error is at most the format's :class:`~.config.Tolerance` bound (documented in :mod:`.config`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .config import Tolerance
from .deploy import Deployable
from .runtime import Runner


class ParityError(ValueError):
    """An exported model's outputs differ from eager PyTorch by more than the documented tolerance."""


@dataclass(frozen=True)
class OutputParity:
    """One output on one input set: ``max_abs_error`` against ``bound = atol + rtol · reference_scale``."""

    inputs: str
    output: str
    samples: int
    max_abs_error: float
    reference_scale: float
    bound: float

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.bound


@dataclass
class ParityReport:
    """Every output of an exported model on every input set."""

    format: str
    runtime: str
    tolerance: Tolerance
    results: list[OutputParity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def max_abs_error(self) -> float:
        return max((r.max_abs_error for r in self.results), default=float("nan"))

    def to_dict(self) -> dict:
        return {"format": self.format, "runtime": self.runtime, "passed": self.passed,
                "max_abs_error": self.max_abs_error, "tolerance": asdict(self.tolerance),
                "results": [{**asdict(r), "passed": r.passed} for r in self.results]}

    def table(self) -> str:
        lines = [f"parity of {self.format} ({self.runtime}) against eager PyTorch; bound = "
                 f"{self.tolerance.atol:g} + {self.tolerance.rtol:g} x max|eager|",
                 f"  {'inputs':<8} {'output':<9} {'n':>3} {'max abs error':>14} {'bound':>10}  result"]
        for r in self.results:
            lines.append(f"  {r.inputs:<8} {r.output:<9} {r.samples:>3} {r.max_abs_error:>14.3e} {r.bound:>10.3e}  "
                         f"{'ok' if r.passed else 'FAIL'}")
        return "\n".join(lines)

    def raise_if_failed(self) -> "ParityReport":
        if not self.passed:
            worst = max(self.results, key=lambda r: r.max_abs_error / r.bound)
            raise ParityError(f"{self.format} export differs from eager PyTorch: {worst.output} on {worst.inputs} "
                              f"inputs has max abs error {worst.max_abs_error:.3e} > tolerance {worst.bound:.3e}\n"
                              f"{self.table()}")
        return self


def compare(runner: Runner, deployable: Deployable, inputs: dict[str, torch.Tensor], format_name: str,
            tolerance: Tolerance) -> ParityReport:
    """Run ``inputs`` (name -> crops (N, 3, S, S)) through the exported model and eager PyTorch.

    Example:
        >>> report = compare(load_onnx("m.onnx"), deployable, {"random": crops}, "onnx", TOLERANCES["onnx"])
        >>> report.raise_if_failed()
    """
    report = ParityReport(format_name, runner.name, tolerance)
    for input_name, images in inputs.items():
        expected = deployable(images)
        actual = runner(images)
        if len(actual) != len(expected):
            raise ParityError(f"{format_name}: {len(actual)} outputs, eager has {len(expected)}")
        for name, want, got in zip(deployable.output_names, expected, actual):
            if tuple(got.shape) != tuple(want.shape):
                raise ParityError(f"{format_name}: output {name} has shape {tuple(got.shape)}, eager "
                                  f"{tuple(want.shape)}")
            scale = float(want.abs().max())
            error = float((got.float() - want).abs().max())
            if not torch.isfinite(got).all():
                error = float("inf")
            report.results.append(OutputParity(input_name, name, int(images.shape[0]), error, scale,
                                               tolerance.bound(scale)))
    return report


def face_crops(image_paths: Sequence[str | Path], size: int = 96, scale: float = 1.25) -> torch.Tensor:
    """Network crops of real photos, cropped around the landmarks annotated beside each image (``.pts``).

    Shape:
        -> (N, 3, size, size) RGB in [0, 1].

    Example:
        >>> crops = face_crops(["shared/data/faces/image_0010.png"])
    """
    from diffface.data.crops import crop_antialiased
    from diffface.landmarks import annotation_path, boxes_from_landmarks, read_image, read_landmark_file

    crops = []
    for path in image_paths:
        annotation = annotation_path(path)
        if annotation is None:
            raise FileNotFoundError(f"{path}: no landmark annotation (.pts/.npy/.json) beside the image to crop by")
        landmarks = torch.from_numpy(read_landmark_file(annotation)[0]).float()[None]
        pixels = torch.from_numpy(read_image(path)).permute(2, 0, 1).float() / 255
        crop, _ = crop_antialiased(pixels, boxes_from_landmarks(landmarks, scale)[0], size)  # as the training crops
        crops.append(crop[None])
    return torch.cat(crops).clamp(0, 1)
