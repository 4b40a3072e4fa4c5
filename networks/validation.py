"""Validation of a regressor with the evaluation metrics on a dataset split with ground-truth shapes.

The predicted shape ``S(p)`` and the ground truth ``S_gt`` share the model's topology and frame, so the
normalised distance ``d`` (:func:`diffface.evaluation.normalized_distance_d`) and the per-vertex error in
mm are taken vertex to vertex, without ICP.
"""

from __future__ import annotations

import numpy as np
import torch

from diffface.evaluation.metrics import auc, normalized_distance_d
from diffface.morphable_model import MorphableModel

from .losses import shape_and_projections
from .predictor import FaceRegressor


def shape_errors(vertices: torch.Tensor, vertices_gt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``d`` and mean per-vertex distance (mm). Shape: (B, V, 3), (B, V, 3) -> {(B,), (B,)}."""
    return {"d": normalized_distance_d(vertices, vertices_gt),
            "error_mm": (vertices - vertices_gt).norm(dim=-1).mean(-1)}


def summarize_errors(d: np.ndarray, error_mm: np.ndarray, error_px: np.ndarray | None, max_d: float) -> dict:
    """Means, medians and the AUC of ``d`` over ``[0, max_d]``."""
    out = {"d_mean": float(d.mean()), "d_median": float(np.median(d)), "auc": auc(d, max_d),
           "error_mm_mean": float(error_mm.mean())}
    if error_px is not None:
        out["error_px_mean"] = float(error_px.mean())
    return out


@torch.inference_mode()
def validate(regressor: FaceRegressor, model: MorphableModel, loader, max_d: float = 1.0,
             device: torch.device | str = "cpu") -> dict:
    """Metrics of ``regressor`` on every batch of ``loader`` (items with ``vertices`` and ``projections``),
    next to the mean-shape baseline on the same items.

    Returns:
        ``{"d_mean", "d_median", "auc", "error_mm_mean", "error_px_mean", "mean_shape_d_mean",
        "mean_shape_auc", "mean_shape_error_mm_mean", "samples"}``.
    """
    was_training = regressor.training
    regressor.eval()
    d, error_mm, error_px, base_d, base_mm = [], [], [], [], []
    try:
        for batch in loader:
            params = regressor(batch["image"].to(device))
            vertices_gt = batch["vertices"].to(device)
            vertices, projections = shape_and_projections(model, regressor.layout, params)
            errors = shape_errors(vertices, vertices_gt)
            d.append(errors["d"])
            error_mm.append(errors["error_mm"])
            error_px.append((projections - batch["projections"].to(device)).norm(dim=-1).mean(-1))
            baseline = shape_errors(model.mean_shape.expand_as(vertices_gt), vertices_gt)
            base_d.append(baseline["d"])
            base_mm.append(baseline["error_mm"])
    finally:
        regressor.train(was_training)
    if not d:
        raise ValueError("validation split is empty")

    def cat(parts):
        return torch.cat(parts).double().cpu().numpy()

    out = summarize_errors(cat(d), cat(error_mm), cat(error_px), max_d)
    base = summarize_errors(cat(base_d), cat(base_mm), None, max_d)
    out.update({f"mean_shape_{k}": v for k, v in base.items() if k != "d_median"})
    out["samples"] = int(sum(len(x) for x in d))
    return out
