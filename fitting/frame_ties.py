"""How stage 2 ties the frames of one subject: shared identity and albedo, smooth motion.

:func:`~.texture_fitting.fit_texture` optimises per-frame tensors; with :class:`FrameTies` the identity
and albedo variables hold one row per subject (gathered to the frames when the energy is evaluated,
their gradients summed over the frames by autograd), the albedo prior is split over the subject's
frames so that it counts once per subject, and the smoothness prior of
:mod:`.sequence_fitting` is added on the angles, the translation and the expression. Stage 2's landmark
term is a mean over the landmarks weighted by ``c_lands`` where stage 1's is a sum: the smoothness
weights are scaled by ``c_lands / 68`` so that they balance the landmarks as in stage 1.
"""

from __future__ import annotations

import torch

from diffface.morphable_model import MorphableModel

from .frame_groups import DifferenceOperator, FrameGroups
from .landmark_fitting import NUM_LANDMARKS
from .sequence_fitting import SequenceFitConfig, smoothness_weights

#: stage-2 variables that hold one row per subject when the identity is shared
SHARED_VARIABLES = ("identity", "albedo")


class FrameTies:
    """Shared variables and the smoothness energy of a batch of frames grouped by subject."""

    def __init__(self, groups: FrameGroups, sequence: SequenceFitConfig, model: MorphableModel, c_lands: float,
                 dtype: torch.dtype, device: torch.device):
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

    def shared(self, name: str) -> bool:
        return self.sequence.share_identity and name in SHARED_VARIABLES

    def initial(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """A variable's starting value: the subject's mean of the frames' values when shared. Shape: (B, K) -> (S or B, K)."""
        if not self.shared(name):
            return value
        return self.groups.sum_per_subject(value) / self.groups.frames_per_subject(value.dtype)[:, None]

    def gather(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Per-frame values of a variable. Shape: (S or B, K) -> (B, K)."""
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
