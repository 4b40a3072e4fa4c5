"""Similarity (Procrustes / Umeyama) alignment of corresponding point sets, batched."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_finite, check_shape


@dataclass(frozen=True)
class Similarity:
    """``x ↦ scale · R x + t``.

    Shape:
        rotation: (B, 3, 3); translation: (B, 3); scale: (B,).
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    scale: torch.Tensor

    def apply(self, points: torch.Tensor) -> torch.Tensor:
        """Shape: (B, N, 3) -> (B, N, 3)."""
        return self.scale[:, None, None] * points @ self.rotation.transpose(1, 2) + self.translation[:, None]


def procrustes(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
               with_scale: bool = False) -> Similarity:
    """The rotation, translation (and scale) that best map ``source`` onto ``target`` in least squares.

    Umeyama's closed form (SVD of the weighted cross-covariance, reflection excluded).

    Args:
        source: points to move.
        target: corresponding points.
        weights: non-negative per-point weights (default: all 1).
        with_scale: also estimate a uniform scale.

    Shape:
        source, target: (B, N, 3); weights: (B, N) -> Similarity with (B, ...) fields.

    Example:
        >>> fit = procrustes(reconstruction, scan_points)
        >>> aligned = fit.apply(reconstruction)
    """
    check_shape(source, ["B", "N", 3], "source")
    check_shape(target, list(source.shape), "target")
    check_finite(source, "source")
    check_finite(target, "target")
    if source.shape[1] < 3:
        raise ValueError(f"procrustes needs at least 3 corresponding points, got {source.shape[1]}")
    w = torch.ones(source.shape[:2], dtype=source.dtype, device=source.device) if weights is None else weights
    check_shape(w, list(source.shape[:2]), "weights")
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    mu_s, mu_t = (w[..., None] * source).sum(1), (w[..., None] * target).sum(1)
    s, t = source - mu_s[:, None], target - mu_t[:, None]
    covariance = (w[..., None] * t).transpose(1, 2) @ s  # (B, 3, 3)
    u, sigma, vh = torch.linalg.svd(covariance)
    d = torch.sign(torch.linalg.det(u @ vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    rotation = u @ fix @ vh
    if with_scale:
        variance = (w * s.pow(2).sum(-1)).sum(1).clamp_min(1e-24)
        scale = (sigma * torch.diagonal(fix, dim1=1, dim2=2)).sum(-1) / variance
    else:
        scale = torch.ones_like(d)
    translation = mu_t - scale[:, None] * (mu_s[:, None] @ rotation.transpose(1, 2))[:, 0]
    return Similarity(rotation=rotation, translation=translation, scale=scale)


class ProcrustesAlign(nn.Module):
    """:func:`procrustes` then apply: returns ``source`` aligned to ``target``.

    Shape:
        forward(source (B, N, 3), target (B, N, 3), weights (B, N) = None) -> (B, N, 3).
    """

    def __init__(self, with_scale: bool = False):
        super().__init__()
        self.with_scale = with_scale

    def forward(self, source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return procrustes(source, target, weights, self.with_scale).apply(source)
