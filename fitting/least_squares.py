"""The weighted least squares behind stage 2's closed-form lighting and albedo, and the IRLS weights that turn
the l1 and l2,1 texture norms into a sequence of them (shared by the UV-frame and the image-space texture terms).
"""

from __future__ import annotations

import torch

from diffface.linear_algebra import solve_spd

from .frame_groups import FrameGroups

NORMS = ("l1", "l2", "l21")


def irls_weights(residual: torch.Tensor, norm: str, eps: float = 1e-3) -> torch.Tensor:
    """Weights that make ``Σ w·r²`` majorise the ``norm`` of ``residual`` at its current value.

    l2: 1; l1: ``1 / (2|r|)`` per channel; l2,1: ``1 / (2‖r‖)`` per texel or pixel (shared by its channels).

    Shape:
        residual: (B, C, ...) (channels on dim 1: UV images (B, C, S, S), pixel lists (B, C, P)) -> same.
    """
    if norm == "l2":
        return torch.ones_like(residual)
    if norm == "l1":
        return 0.5 / residual.abs().clamp_min(eps)
    if norm == "l21":
        return (0.5 / residual.pow(2).sum(1, keepdim=True).sqrt().clamp_min(eps)).expand_as(residual)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def normal_equations(design: torch.Tensor, target: torch.Tensor,
                     weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Dᵀ W D, Dᵀ W y)`` per sample, for :func:`solve_normal_equations` (summed over chunks of rows if need be).

    Shape:
        design: (B, N, P); target, weight: (B, N) -> (B, P, P), (B, P).
    """
    weighted = design * weight[..., None]
    return weighted.transpose(1, 2) @ design, (weighted.transpose(1, 2) @ target[..., None])[..., 0]


def solve_normal_equations(normal: torch.Tensor, rhs: torch.Tensor, ridge: torch.Tensor,
                           groups: FrameGroups | None = None) -> torch.Tensor:
    """``(N + diag(ridge))⁻¹ r`` per sample, or per subject of ``groups`` (its samples' equations summed, the ridge
    once), by Cholesky (:func:`~diffface.linear_algebra.solve_spd`: NaN where the system is not positive-definite).

    Shape:
        normal: (B, P, P); rhs: (B, P); ridge: (P,) or (B, P) (per subject with groups) -> (B, P) or (S, P).
    """
    if groups is not None:
        normal, rhs = groups.sum_per_subject(normal), groups.sum_per_subject(rhs)
    normal = normal + torch.diag_embed(ridge.expand(normal.shape[0], -1))
    return solve_spd(normal, rhs[..., None])[0][..., 0]


def weighted_least_squares(design: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                           ridge: torch.Tensor, groups: FrameGroups | None = None) -> torch.Tensor:
    """``argmin_x Σ_n w_n (D_n·x − y_n)² + Σ_p ridge_p x_p²`` per sample, or per subject of ``groups`` (one ``x``
    for all its samples: their normal equations summed, the ridge once).

    Shape:
        design: (B, N, P); target, weight: (B, N); ridge: (P,) or (B, P) (per subject with groups) -> (B, P) or (S, P).
    """
    normal, rhs = normal_equations(design, target, weight)
    return solve_normal_equations(normal, rhs, ridge, groups)
