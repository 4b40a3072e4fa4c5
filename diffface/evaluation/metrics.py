"""Reconstruction error metrics: the normalised distance d, errors in mm, CED curves and their AUC."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["normalized_distance_d", "NormalizedDistance", "error_mm_stats", "ced_curve", "auc"]


def normalized_distance_d(aligned, projected):
    """``d(S, S_gt) = 100 · ‖S − S_gt‖² / ‖S_gt − mean(S_gt)‖²`` per sample (squared Frobenius norms).

    ``S`` is the aligned reconstruction and ``S_gt`` its corresponding points on the ground truth
    (the projections found by ICP), so ``d`` is the residual in percent of the shape's spread.

    Args:
        aligned: aligned reconstruction vertices (numpy or torch).
        projected: their ground-truth correspondences.

    Returns:
        d per sample, same library as the input.

    Shape:
        (B, N, 3) -> (B,), or (N, 3) -> ().

    Example:
        >>> normalized_distance_d(torch.zeros(1, 4, 3), torch.eye(4, 3)[None])
    """
    if aligned.shape != projected.shape or aligned.shape[-1] != 3:
        raise ValueError(f"aligned and projected must be (*, N, 3) of one shape, got {tuple(aligned.shape)} "
                         f"and {tuple(projected.shape)}")
    lib = torch if isinstance(aligned, torch.Tensor) else np
    residual = ((aligned - projected) ** 2).sum((-2, -1))
    spread = ((projected - projected.mean(-2, keepdims=True) if lib is np else
               projected - projected.mean(-2, keepdim=True)) ** 2).sum((-2, -1))
    if (spread <= 0).any():
        raise ValueError("the ground-truth points have no spread (all equal): d is undefined")
    return 100 * residual / spread


class NormalizedDistance(nn.Module):
    """:func:`normalized_distance_d` as a module. Shape: forward((B, N, 3), (B, N, 3)) -> (B,)."""

    def forward(self, aligned: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
        return normalized_distance_d(aligned, projected)


def error_mm_stats(distances_mm: np.ndarray) -> dict:
    """``{"mean_mm", "median_mm", "rms_mm"}`` of one sample's per-vertex distances. Shape: (N,)."""
    distances_mm = np.asarray(distances_mm, dtype=np.float64)
    if distances_mm.size == 0 or not np.isfinite(distances_mm).all():
        raise ValueError("distances must be a non-empty finite array")
    return {"mean_mm": float(distances_mm.mean()), "median_mm": float(np.median(distances_mm)),
            "rms_mm": float(np.sqrt((distances_mm ** 2).mean()))}


def ced_curve(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Cumulative error distribution: the fraction of samples with error ≤ each threshold.

    Failed samples count as ``inf`` (never below a threshold). Shape: errors (S,), thresholds (T,) -> (T,).

    Example:
        >>> ced_curve(np.array([0.1, 0.5, np.inf]), np.linspace(0, 1, 11))
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    if errors.size == 0:
        raise ValueError("ced_curve needs at least one error")
    if np.isnan(errors).any():
        raise ValueError("errors contain NaN (use inf for failed samples)")
    return np.searchsorted(errors, np.asarray(thresholds, dtype=np.float64), side="right") / errors.size


def auc(errors: np.ndarray, max_error: float = 1.0) -> float:
    """Area under the CED over ``[0, max_error]``, divided by ``max_error`` (1: every error is 0).

    Exact: ``∫₀ᴹ 1[e ≤ t] dt = M − min(e, M)``, so the AUC is ``mean(1 − min(e, M) / M)``.
    Failed samples (``inf``) contribute 0. Shape: errors (S,) -> float.

    Example:
        >>> auc(np.array([0.0, 0.5]))   # 0.75
    """
    if max_error <= 0:
        raise ValueError(f"max_error must be positive, got {max_error}")
    errors = np.asarray(errors, dtype=np.float64).ravel()
    if errors.size == 0:
        raise ValueError("auc needs at least one error")
    if np.isnan(errors).any() or (errors < 0).any():
        raise ValueError("errors must be non-negative (inf for failed samples), got NaN or negative values")
    return float(np.mean(1.0 - np.minimum(errors, max_error) / max_error))
