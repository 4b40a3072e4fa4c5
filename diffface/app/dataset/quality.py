"""Automatic fit-quality flags, so a person curating a dataset can review the worst fits first.

Every measure is "higher = worse" and has a threshold in :class:`QualityConfig`; an item is flagged
for each measure beyond its threshold, and its ``score`` is the largest measure-over-threshold ratio
(so ``score > 1`` exactly when some measure is flagged, and sorting by ``score`` puts the worst first).

=========================  ======================================================  =======================
measure (``quality`` key)  meaning                                                 flag
=========================  ======================================================  =======================
``landmark_rms_px``        RMS distance of fitted to observed landmarks, crop px    ``landmark_residual``
``texture_residual``       mean per-pixel RGB L2 distance of the rendered face      ``texture_residual``
                           to the crop over the face (intensities in [0, 1]);
                           only where albedo and lighting are known
``texture_energy``         the fit's own stage-2 texture energy (not thresholded)   --
``max_abs_sigma``          largest ``|α/σ|`` over identity and expression modes     ``implausible_params``
``abs_yaw_deg``,           head yaw and pitch magnitudes                           ``extreme_pose``
``abs_pitch_deg``
=========================  ======================================================  =======================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffface.checks import check_shape

FLAGS = ("landmark_residual", "texture_residual", "implausible_params", "extreme_pose")


@dataclass
class QualityConfig:
    """Thresholds of the automatic flags.

    Attributes:
        max_landmark_rms: largest landmark RMS residual, as a fraction of the crop side
            (0.03 is about 3 px in a 96 px crop).
        max_texture_residual: largest mean per-pixel RGB residual (intensities in [0, 1]).
        max_abs_sigma: largest ``|α/σ|`` of any identity or expression mode.
        max_abs_yaw_deg, max_abs_pitch_deg: largest head yaw and pitch (degrees).
    """

    max_landmark_rms: float = 0.03
    max_texture_residual: float = 0.15
    max_abs_sigma: float = 3.0
    max_abs_yaw_deg: float = 60.0
    max_abs_pitch_deg: float = 30.0

    def validate(self) -> None:
        for name in ("max_landmark_rms", "max_texture_residual", "max_abs_sigma", "max_abs_yaw_deg",
                     "max_abs_pitch_deg"):
            if not getattr(self, name) > 0:
                raise ValueError(f"quality threshold {name} must be positive, got {getattr(self, name)}")


def landmark_rms(fitted: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """RMS distance between fitted and observed landmarks; rows with a NaN on either side are left out.

    Shape:
        fitted, observed: (B, N, 2) -> (B,) (NaN where no landmark pair is finite).

    Example:
        >>> landmark_rms(torch.zeros(1, 2, 2), torch.tensor([[[3.0, 4.0], [0.0, 0.0]]]))
        tensor([3.5355])
    """
    check_shape(fitted, ["B", "N", 2], "fitted")
    check_shape(observed, list(fitted.shape), "observed")
    squared = (fitted - observed).pow(2).sum(-1)
    valid = torch.isfinite(squared)
    count = valid.sum(1)
    total = torch.where(valid, squared, torch.zeros_like(squared)).sum(1)
    return torch.where(count > 0, (total / count.clamp_min(1)).sqrt(), torch.full_like(total, math.nan))


def max_abs_sigma(alpha_id: torch.Tensor, alpha_exp: torch.Tensor, id_std: torch.Tensor,
                  exp_std: torch.Tensor) -> torch.Tensor:
    """The largest ``|α/σ|`` over all identity and expression modes of each sample.

    Shape:
        alpha_id: (B, K_id); alpha_exp: (B, K_exp); id_std: (K_id,); exp_std: (K_exp,) -> (B,).
    """
    check_shape(alpha_id, ["B", id_std.shape[0]], "alpha_id")
    check_shape(alpha_exp, [alpha_id.shape[0], exp_std.shape[0]], "alpha_exp")
    z = torch.cat([alpha_id / id_std, alpha_exp / exp_std], 1).abs()
    return z.amax(1) if z.shape[1] else torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)


def fit_quality(landmarks_fitted: torch.Tensor, landmarks_observed: torch.Tensor, alpha_id: torch.Tensor,
                alpha_exp: torch.Tensor, angles: torch.Tensor, id_std: torch.Tensor, exp_std: torch.Tensor,
                crop_size: int, texture_residual: torch.Tensor | None = None,
                config: QualityConfig = QualityConfig()) -> tuple[list[dict], list[list[str]]]:
    """Quality measures, flags and a sortable ``score`` per sample (see the module docstring).

    Args:
        landmarks_fitted, landmarks_observed: landmarks in crop pixels.
        alpha_id, alpha_exp, angles: the fitted parameters (angles in radians: pitch, yaw, roll).
        id_std, exp_std: the model's mode standard deviations.
        crop_size: side of the crop the landmarks are in.
        texture_residual: per-sample photometric residual, NaN where unknown; None: unknown for all.
        config: thresholds.

    Returns:
        ``(quality, flags)``: per sample a dict of measures (JSON numbers or None) with ``score``,
        and the list of raised flag names (a subset of :data:`FLAGS`, in that order).

    Shape:
        landmarks_*: (B, 68, 2); alpha_id: (B, K_id); alpha_exp: (B, K_exp); angles: (B, 3);
        texture_residual: (B,).
    """
    config.validate()
    check_shape(angles, [alpha_id.shape[0], 3], "angles")
    B = alpha_id.shape[0]
    if texture_residual is None:
        texture_residual = torch.full((B,), math.nan)
    measures = {
        "landmark_rms_px": landmark_rms(landmarks_fitted.double(), landmarks_observed.double()),
        "texture_residual": texture_residual.double(),
        "max_abs_sigma": max_abs_sigma(alpha_id.double(), alpha_exp.double(), id_std.double(), exp_std.double()),
        "abs_yaw_deg": angles[:, 1].double().abs().rad2deg(),
        "abs_pitch_deg": angles[:, 0].double().abs().rad2deg(),
    }
    limits = {"landmark_rms_px": ("landmark_residual", config.max_landmark_rms * crop_size),
              "texture_residual": ("texture_residual", config.max_texture_residual),
              "max_abs_sigma": ("implausible_params", config.max_abs_sigma),
              "abs_yaw_deg": ("extreme_pose", config.max_abs_yaw_deg),
              "abs_pitch_deg": ("extreme_pose", config.max_abs_pitch_deg)}
    values = {k: v.detach().cpu().tolist() for k, v in measures.items()}
    qualities, flags = [], []
    for b in range(B):
        quality = {k: (v[b] if math.isfinite(v[b]) else None) for k, v in values.items()}
        ratios = {k: quality[k] / limit for k, (_, limit) in limits.items() if quality[k] is not None}
        raised = {limits[k][0] for k, r in ratios.items() if r > 1}
        quality["score"] = max(ratios.values(), default=0.0)
        qualities.append(quality)
        flags.append([f for f in FLAGS if f in raised])
    return qualities, flags
