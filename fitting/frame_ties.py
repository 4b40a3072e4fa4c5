"""How stage 2 ties the frames of one subject: shared identity and albedo, smooth motion.

:func:`~.texture_fitting.fit_texture` optimises per-frame tensors; with :class:`FrameTies` the identity
and albedo variables hold one row per subject (gathered to the frames when the energy is evaluated,
their gradients summed over the frames by autograd), the albedo prior is split over the subject's
frames so that it counts once per subject, and the smoothness prior of
:mod:`.sequence_fitting` is added on the angles, the translation and the expression. Stage 2's landmark
term is a mean over the landmarks weighted by ``c_lands`` where stage 1's is a sum: the smoothness
weights are scaled by ``c_lands / 68`` so that they balance the landmarks as in stage 1. With smoothing, the
angles, translation and expression are optimised as a step from their start taken through a temporal low-pass filter
(:func:`low_pass_filter`), so that Adam's per-coordinate steps keep the motion smooth instead of fighting the prior.
"""

from __future__ import annotations

import torch

from diffface.morphable_model import MorphableModel

from .frame_groups import DifferenceOperator, FrameGroups
from .landmark_fitting import NUM_LANDMARKS
from .sequence_fitting import SequenceFitConfig, smoothness_weights

#: stage-2 variables that hold one row per subject when the identity is shared
SHARED_VARIABLES = ("identity", "albedo")
#: stage-2 variables the smoothness prior ties (angles, translation, expression), stepped through the low-pass
#: filter when ``sequence.stage2_step_filter`` > 0
SMOOTHED_VARIABLES = ("pose", "translation", "expression")


class FrameTies:
    """Shared variables and the smoothness energy of a batch of frames grouped by subject.

    ``filter_steps``: step the smoothed variables through the low-pass filter when ``sequence.stage2_step_filter``
    > 0 (for Adam; the Levenberg-Marquardt step of :mod:`.gauss_newton_ties` solves the coupled system itself).
    """

    def __init__(self, groups: FrameGroups, sequence: SequenceFitConfig, model: MorphableModel, c_lands: float,
                 dtype: torch.dtype, device: torch.device, filter_steps: bool = True):
        self.groups, self.sequence = groups.to(device), sequence
        self.operator = (self.groups.difference(sequence.smooth_order) if sequence.smooth
                         else DifferenceOperator.empty(self.groups.num_frames, device=device))
        scale = c_lands / NUM_LANDMARKS
        weights = smoothness_weights(sequence, model, dtype)
        std = model.exp_std.to(dtype).cpu().clamp_min(1e-12)
        # stage 2's expression variable is in σ units: λ/σ² on α is λ on α/σ
        self.weights = {"angles": weights["pose"][:3].to(device) * scale,
                        "translation": weights["pose"][3:].to(device) * scale,
                        "expression": (weights["expression"] * std.pow(2)).to(device) * scale}
        self.filter = (low_pass_filter(self.operator, sequence.stage2_step_filter).to(dtype)
                       if filter_steps and self.operator.num_rows and sequence.stage2_step_filter > 0 else None)
        self.base: dict[str, torch.Tensor] = {}

    def filtered(self, name: str) -> bool:
        """Whether a variable is the filtered step from its start (``x = x₀ + F·δ``) rather than ``x`` itself."""
        return self.filter is not None and name in SMOOTHED_VARIABLES

    def shared(self, name: str) -> bool:
        return self.sequence.share_identity and name in SHARED_VARIABLES

    def learning_rate(self, name: str, default: float) -> float:
        """Adam's step size for a variable: ``sequence.stage2_identity_learning_rate`` for an identity shared by
        several frames."""
        rate = self.sequence.stage2_identity_learning_rate
        return rate if name == "identity" and self._pooled() and rate is not None else default

    def rounds(self, default: int) -> int:
        """Stage 2's rounds over the groups: ``sequence.stage2_rounds`` when an identity is shared by several frames."""
        rounds = self.sequence.stage2_rounds
        return rounds if self._pooled() and rounds is not None else default

    def _pooled(self) -> bool:
        """Whether an identity is shared by several frames (a batch of single-frame subjects is fitted as images)."""
        return self.sequence.share_identity and self.groups.num_frames > self.groups.num_subjects

    def initial(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A variable's starting value: the subject's mean of the frames' values when shared, zero (the step ``δ``)
        when filtered. Shape: (B, K) -> (S or B, K)."""
        if self.filtered(name):
            self.base[name] = value.detach().clone()
            return torch.zeros_like(value)
        if not self.shared(name):
            return value
        return self.groups.sum_per_subject(value) / self.groups.frames_per_subject(value.dtype)[:, None]

    def gather(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Per-frame values of a variable. Shape: (S or B, K) -> (B, K)."""
        if self.filtered(name):
            return self.base[name] + self.filter @ value
        return value.index_select(0, self.groups.subject) if self.shared(name) else value

    def prior_share(self, dtype: torch.dtype) -> torch.Tensor:
        """The fraction of a shared variable's prior each frame carries (1 when not shared). Shape: -> (B,)."""
        if not self.sequence.share_identity:
            return torch.ones(self.groups.num_frames, dtype=dtype, device=self.groups.subject.device)
        return 1.0 / self.groups.frames_per_subject(dtype)[self.groups.subject]

    def smoothness(self, angles: torch.Tensor, translation: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """The smoothness energy, each difference row charged to its first frame. Shape: (B, 3), (B, 3), (B, K) -> (B,)."""
        out = angles.new_zeros(angles.shape[0])
        if self.operator.num_rows == 0:
            return out
        rows = sum((self.operator.apply(x).pow(2) * self.weights[name]).sum(-1)
                   for name, x in (("angles", angles), ("translation", translation), ("expression", expression)))
        return out.index_add(0, self.operator.rows[:, 0], rows)

    def rows_ok(self, name: str, frames_ok: torch.Tensor) -> torch.Tensor:
        """Which rows of a variable are sound: a shared row when every frame of its subject is. Shape: (B,) -> (S or B,)."""
        if not self.shared(name):
            return frames_ok
        return self.groups.sum_per_subject((~frames_ok).to(torch.int64)) == 0


def low_pass_filter(operator: DifferenceOperator, strength: float) -> torch.Tensor:
    """``F = (I + μ·DᵀD)⁻¹``, dense: a step ``δ`` taken through it moves the frames by ``F·δ``, whose components that
    ``D`` annihilates (per subject: a constant, and for second differences a linear trend) pass unchanged and whose
    fastest oscillations are damped by ``1 + μ·16`` (second differences). Shape: -> (B, B), float64.

    Adam moves every coordinate of a fresh variable by about its learning rate per step, frame by frame; under a
    strong smoothness prior the prior's gradient then dominates, alternates in sign from frame to frame, and the
    whole sequence can hardly shift (a common offset in depth, say) while the shared identity takes up what it
    should have done. Stepping through ``F`` keeps each step smooth in time.
    """
    B = operator.num_frames
    eye = torch.eye(B, dtype=torch.float64, device=operator.rows.device)
    gram = operator.apply_transpose(operator.apply(eye))
    return torch.cholesky_inverse(torch.linalg.cholesky(eye + strength * gram))
