"""Parity of an exported model with eager PyTorch, on random crops and on real face crops.

The reference is the eager :class:`~.deploy.Deployable` module (BatchNorm and normalisation folded, which
:func:`~diffface.networks.fold_batchnorm`'s tests tie to the checkpoint's network). The parameter output is
cut into the groups of its :class:`~diffface.params.ParamLayout` and each group is compared in its own
units (angles in rad, coefficients in σ, translation in mm, focal length and principal point in px; the
vertices in mm); each passes when its max abs error is at most the format's :class:`~.config.Tolerance`
bound for that group (documented in :mod:`.config`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .config import GROUP_UNITS, Tolerance
from .deploy import Deployable
from .runtime import Runner
from diffface.data.crops import crop_antialiased
from diffface.landmarks import annotation_path, boxes_from_landmarks, read_image, read_landmark_file


class ParityError(ValueError):
    """An exported model's outputs differ from eager PyTorch by more than the documented tolerance."""


@dataclass(frozen=True)
class OutputParity:
    """One group of one output on one input set: ``max_abs_error`` (in ``unit``) against ``bound``.

    ``reference_scale`` is the largest absolute eager value of the group, in the same unit (for context).
    """

    inputs: str
    output: str
    group: str
    unit: str
    samples: int
    max_abs_error: float
    reference_scale: float
    bound: float

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.bound

    @property
    def ratio(self) -> float:
        """``max_abs_error / bound``: above 1 fails; the worst group has the largest."""
        return self.max_abs_error / self.bound


@dataclass
class ParityReport:
    """Every group of every output of an exported model on every input set."""

    format: str
    runtime: str
    tolerance: Tolerance
    results: list[OutputParity] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def max_abs_error(self) -> float:
        """The largest error of any group (mixed units: see :attr:`worst` for the group that matters)."""
        return max((r.max_abs_error for r in self.results), default=float("nan"))

    @property
    def worst(self) -> OutputParity | None:
        """The group closest to (or furthest over) its bound."""
        return max(self.results, key=lambda r: r.ratio, default=None)

    def to_dict(self) -> dict:
        worst = self.worst
        return {"format": self.format, "runtime": self.runtime, "passed": self.passed,
                "max_abs_error": self.max_abs_error, "tolerance": asdict(self.tolerance),
                "worst": None if worst is None else {**asdict(worst), "ratio": worst.ratio},
                "results": [{**asdict(r), "passed": r.passed} for r in self.results]}

    def table(self) -> str:
        lines = [f"parity of {self.format} ({self.runtime}) against eager PyTorch; each group in its own units",
                 f"  {'inputs':<8} {'output':<9} {'group':<16} {'n':>3} {'max abs error':>14} {'bound':>10} "
                 f"{'unit':<6} result"]
        for r in self.results:
            lines.append(f"  {r.inputs:<8} {r.output:<9} {r.group:<16} {r.samples:>3} {r.max_abs_error:>14.3e} "
                         f"{r.bound:>10.3e} {r.unit:<6} {'ok' if r.passed else 'FAIL'}")
        worst = self.worst
        if worst is not None:
            lines.append(f"  worst: {worst.group} ({worst.output}, {worst.inputs}) at {worst.ratio:.2g} x its bound")
        return "\n".join(lines)

    def raise_if_failed(self) -> "ParityReport":
        if not self.passed:
            worst = self.worst
            raise ParityError(f"{self.format} export differs from eager PyTorch: {worst.group} ({worst.output}) on "
                              f"{worst.inputs} inputs has max abs error {worst.max_abs_error:.3e} {worst.unit} > "
                              f"tolerance {worst.bound:.3e} {worst.unit}\n{self.table()}")
        return self


def output_groups(deployable: Deployable, name: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One output cut into the groups the parity check bounds, each in its own units.

    ``params`` (B, P) -> its :class:`~diffface.params.ParamLayout` network groups, the identity and
    expression coefficients divided by their σ (``deployable.coefficient_std``); ``vertices`` stays whole (mm).
    """
    if name != "params":
        return {name: value}
    slices = deployable.layout.slices
    first = slices["alpha_id"].start
    groups = {}
    for group in deployable.layout.NETWORK_GROUPS:
        part = value[:, slices[group]].double()
        if GROUP_UNITS[group] == "sigma":
            part = part / deployable.coefficient_std[slices[group].start - first:slices[group].stop - first].double()
        groups[group] = part
    return groups


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
            wanted = output_groups(deployable, name, want)
            for group, got_group in output_groups(deployable, name, got.float()).items():
                finite = bool(torch.isfinite(got_group).all())
                error = float((got_group - wanted[group]).abs().max()) if finite else float("inf")
                report.results.append(OutputParity(input_name, name, group, GROUP_UNITS[group],
                                                   int(images.shape[0]), error, float(wanted[group].abs().max()),
                                                   tolerance.bound(group)))
    return report


def face_crops(image_paths: Sequence[str | Path], size: int = 96, scale: float = 1.25) -> torch.Tensor:
    """Network crops of real photos, cropped around the landmarks annotated beside each image (``.pts``).

    Shape:
        -> (N, 3, size, size) RGB in [0, 1].

    Example:
        >>> crops = face_crops(["shared/data/faces/image_0010.png"])
    """
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
