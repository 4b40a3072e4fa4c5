"""The one named parameter layout of diffface.

The network predicts ``p = [α_id, α_exp, t(3), φ, γ, θ, f, Px, Py]`` (118 values for
BFM+FaceWarehouse: 80 + 29 + 9; 78 for the Surrey model: 63 + 6 + 9). Fitting adds the albedo
coefficients ``β`` and 27 spherical-harmonics lighting coefficients after it. Every other module
uses the names defined here instead of positions in a vector.

Angles are in radians: ``φ`` (pitch, about x), ``γ`` (yaw, about y), ``θ`` (roll, about z); see
:mod:`diffface.camera` for the convention. ``t`` is in millimetres (model units), ``f``, ``Px``,
``Py`` in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from .checks import check_shape

SH_COEFFS = 27  # 9 spherical-harmonics coefficients x RGB


@dataclass(frozen=True)
class FaceParameters:
    """A batch of face parameters, one named tensor per group (frozen: change a group with
    ``dataclasses.replace``; the tensors themselves are not copied).

    Shape:
        alpha_id: (B, K_id); alpha_exp: (B, K_exp); translation: (B, 3) mm;
        angles: (B, 3) radians (φ pitch, γ yaw, θ roll); focal: (B, 1) px;
        principal_point: (B, 2) px; beta: (B, K_tex) or None; sh: (B, 27) or None,
        ordered ``[channel][coefficient]`` (R's 9, then G's, then B's).
    """

    alpha_id: torch.Tensor
    alpha_exp: torch.Tensor
    translation: torch.Tensor
    angles: torch.Tensor
    focal: torch.Tensor
    principal_point: torch.Tensor
    beta: torch.Tensor | None = None
    sh: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.alpha_id.shape[0])

    def items(self):
        for f in fields(self):
            yield f.name, getattr(self, f.name)

    def map(self, fn) -> "FaceParameters":
        """Apply ``fn`` to every tensor (e.g. ``lambda t: t.to(device)``)."""
        return FaceParameters(**{k: (None if v is None else fn(v)) for k, v in self.items()})

    def detach(self) -> "FaceParameters":
        return self.map(lambda t: t.detach())

    def to(self, *args, **kwargs) -> "FaceParameters":
        return self.map(lambda t: t.to(*args, **kwargs))

    def index(self, idx) -> "FaceParameters":
        """Select samples along the batch dimension."""
        return self.map(lambda t: t[idx])

    @property
    def sh_coefficients(self) -> torch.Tensor:
        """SH lighting as ``(B, 9, 3)`` (coefficient, channel)."""
        if self.sh is None:
            raise ValueError("these parameters carry no SH lighting ('sh' is None)")
        return self.sh.reshape(-1, 3, 9).transpose(1, 2)


@dataclass(frozen=True)
class ParamLayout:
    """Named slices of the parameter vector for a model with the given dimensions.

    Args:
        id_dims: number of identity modes (K_id).
        exp_dims: number of expression modes (K_exp).
        tex_dims: number of albedo modes (K_tex), used by the fitting-only part.

    Example:
        >>> layout = ParamLayout(80, 29, 80)
        >>> layout.network_size, layout.full_size
        (118, 225)
        >>> layout.slices["translation"]
        slice(109, 112, None)
    """

    id_dims: int
    exp_dims: int
    tex_dims: int = 0

    NETWORK_GROUPS = ("alpha_id", "alpha_exp", "translation", "angles", "focal", "principal_point")
    FITTING_GROUPS = ("beta", "sh")
    ANGLE_NAMES = ("phi_pitch", "gamma_yaw", "theta_roll")

    def sizes(self) -> dict[str, int]:
        return {
            "alpha_id": self.id_dims,
            "alpha_exp": self.exp_dims,
            "translation": 3,
            "angles": 3,
            "focal": 1,
            "principal_point": 2,
            "beta": self.tex_dims,
            "sh": SH_COEFFS,
        }

    @property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, size in self.sizes().items():
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def network_size(self) -> int:
        """Length of the network's output vector ``p``."""
        return self.id_dims + self.exp_dims + 9

    @property
    def full_size(self) -> int:
        """Length of ``p`` plus the fitting-only albedo and lighting."""
        return self.network_size + self.tex_dims + SH_COEFFS

    def names(self, include_fitting: bool = False) -> list[str]:
        """One human-readable name per entry of the vector (for logs and reports)."""
        sizes = self.sizes()
        groups = self.NETWORK_GROUPS + (self.FITTING_GROUPS if include_fitting else ())
        out: list[str] = []
        for group in groups:
            if group == "translation":
                out += ["t_x", "t_y", "t_z"]
            elif group == "angles":
                out += list(self.ANGLE_NAMES)
            elif group == "principal_point":
                out += ["p_x", "p_y"]
            elif group == "focal":
                out += ["focal"]
            else:
                out += [f"{group}_{i}" for i in range(sizes[group])]
        return out

    def unpack(self, p: torch.Tensor) -> FaceParameters:
        """Split ``p`` of shape ``(B, network_size)`` or ``(B, full_size)`` into named groups."""
        if p.ndim != 2 or p.shape[1] not in (self.network_size, self.full_size):
            raise ValueError(
                f"parameter vector must be (B, {self.network_size}) or (B, {self.full_size}) for "
                f"layout {self}, got {tuple(p.shape)}"
            )
        s = self.slices
        groups = {name: p[:, s[name]] for name in self.NETWORK_GROUPS}
        if p.shape[1] == self.full_size:
            groups.update({name: p[:, s[name]] for name in self.FITTING_GROUPS})
        return FaceParameters(**groups)

    def pack(self, params: FaceParameters, include_fitting: bool = False) -> torch.Tensor:
        """Concatenate named groups into ``(B, network_size)`` or ``(B, full_size)``."""
        sizes = self.sizes()
        groups = self.NETWORK_GROUPS + (self.FITTING_GROUPS if include_fitting else ())
        parts = []
        for name in groups:
            value = getattr(params, name)
            if value is None:
                raise ValueError(f"cannot pack: parameter group '{name}' is missing")
            check_shape(value, ["B", sizes[name]], name)
            parts.append(value)
        return torch.cat(parts, dim=1)

    def zeros(self, batch: int, include_fitting: bool = True, **tensor_kw) -> FaceParameters:
        size = self.full_size if include_fitting else self.network_size
        return self.unpack(torch.zeros(batch, size, **tensor_kw))


def normalize_params(p: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(p - mean) / std`` per entry. Shape: p (B, N), mean (N,), std (N,)."""
    check_shape(p, ["B", mean.shape[0]], "p")
    return (p - mean) / std


def denormalize_params(p_normalized: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_params`. Shape: (B, N) -> (B, N)."""
    check_shape(p_normalized, ["B", mean.shape[0]], "p_normalized")
    return p_normalized * std + mean


class ParamNormalizer(nn.Module):
    """Per-parameter normalisation statistics, stored as buffers so checkpoints carry them.

    Args:
        mean: (N,) per-entry mean.
        std: (N,) per-entry standard deviation (entries with std 0 are given std 1).

    Shape:
        forward/normalize: (B, N) -> (B, N); denormalize: (B, N) -> (B, N).

    Example:
        >>> stats = ParamNormalizer.from_samples(torch.randn(100, 118))
        >>> p = stats.denormalize(torch.zeros(4, 118))
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(f"mean and std must both be (N,), got {tuple(mean.shape)} and {tuple(std.shape)}")
        std = torch.where(std > 0, std, torch.ones_like(std))
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    @classmethod
    def from_samples(cls, p: torch.Tensor) -> "ParamNormalizer":
        """Statistics of a dataset of parameter vectors ``(M, N)``."""
        check_shape(p, ["M", "N"], "p")
        if p.shape[0] < 2:
            raise ValueError("need at least 2 samples to estimate parameter statistics")
        return cls(p.mean(0), p.std(0))

    def normalize(self, p: torch.Tensor) -> torch.Tensor:
        return normalize_params(p, self.mean, self.std)

    def denormalize(self, p_normalized: torch.Tensor) -> torch.Tensor:
        return denormalize_params(p_normalized, self.mean, self.std)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.normalize(p)
