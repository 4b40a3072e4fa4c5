"""Which frames of a batch show the same person, and which follow each other in time.

A batch of ``B`` frames holds ``S`` subjects: a video (its frames in order) or a photo set of one
person (no order). :class:`FrameGroups` says which subject each frame shows; for ordered subjects
(videos) it also gives the temporal **difference operator** ``D`` of order 1 (``x_t − x_{t−1}``) or
2 (``x_{t−1} − 2·x_t + x_{t+1}``, the acceleration) over neighbouring frames of the same subject, in
batch order. The smoothness prior of :mod:`.sequence_fitting` is ``λ·‖D·x‖²``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from diffface.checks import check_shape

#: the coefficients of the first and second finite differences
DIFFERENCE_COEFFICIENTS = {1: (-1.0, 1.0), 2: (1.0, -2.0, 1.0)}


@dataclass(frozen=True)
class DifferenceOperator:
    """A sparse temporal difference operator ``D`` on per-frame vectors.

    Row ``r`` of ``D·x`` is ``Σ_j c_j · x[rows[r, j]]``.

    Shape:
        rows: (R, n) frame indices (n = order + 1); coefficients: (n,); num_frames: B.
    """

    rows: torch.Tensor
    coefficients: tuple[float, ...]
    num_frames: int

    @staticmethod
    def empty(num_frames: int, order: int = 2, device: torch.device | str = "cpu") -> "DifferenceOperator":
        """An operator without rows: nothing is smoothed."""
        return DifferenceOperator(torch.zeros(0, order + 1, dtype=torch.long, device=device),
                                  DIFFERENCE_COEFFICIENTS[order], num_frames)

    @property
    def num_rows(self) -> int:
        return int(self.rows.shape[0])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``D·x``. Shape: (B, K) -> (R, K)."""
        out = x.new_zeros(self.num_rows, x.shape[-1])
        for j, c in enumerate(self.coefficients):
            out = out + c * x.index_select(0, self.rows[:, j])
        return out

    def apply_transpose(self, y: torch.Tensor) -> torch.Tensor:
        """``Dᵀ·y``. Shape: (R, K) -> (B, K)."""
        out = y.new_zeros(self.num_frames, y.shape[-1])
        for j, c in enumerate(self.coefficients):
            out.index_add_(0, self.rows[:, j], c * y)
        return out

    def gram_diagonal(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The diagonal of ``DᵀD`` (how many difference rows touch each frame, weighted). Shape: -> (B,)."""
        out = torch.zeros(self.num_frames, dtype=dtype, device=self.rows.device)
        for j, c in enumerate(self.coefficients):
            out.index_add_(0, self.rows[:, j], torch.full((self.num_rows,), c * c, dtype=dtype,
                                                          device=self.rows.device))
        return out


@dataclass(frozen=True)
class FrameGroups:
    """The subject of every frame, and whether each subject's frames are a sequence in batch order.

    Shape:
        subject: (B,) int64 in ``[0, S)``; ordered: (S,) bool.
    """

    subject: torch.Tensor
    ordered: torch.Tensor

    def __post_init__(self):
        check_shape(self.subject, ["B"], "subject")
        if self.subject.numel() and (self.subject.min() < 0 or self.subject.max() >= self.ordered.shape[0]):
            raise ValueError(f"subject indices must lie in [0, {self.ordered.shape[0]}), got "
                             f"{int(self.subject.min())}..{int(self.subject.max())}")

    @property
    def num_frames(self) -> int:
        return int(self.subject.shape[0])

    @property
    def num_subjects(self) -> int:
        return int(self.ordered.shape[0])

    def frames_per_subject(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Shape: -> (S,)."""
        return self.sum_per_subject(torch.ones(self.num_frames, dtype=dtype, device=self.subject.device))

    def sum_per_subject(self, values: torch.Tensor) -> torch.Tensor:
        """Sum per-frame values over each subject's frames. Shape: (B, ...) -> (S, ...)."""
        out = values.new_zeros((self.num_subjects, *values.shape[1:]))
        return out.index_add_(0, self.subject, values)

    def to(self, device) -> "FrameGroups":
        return FrameGroups(self.subject.to(device), self.ordered.to(device))

    def index(self, frames: torch.Tensor) -> "FrameGroups":
        """The groups of a subset of frames (kept in the given order; subjects renumbered densely)."""
        kept, subject = torch.unique(self.subject[frames], return_inverse=True)
        return FrameGroups(subject, self.ordered[kept])

    def difference(self, order: int) -> DifferenceOperator:
        """The order-``order`` differences over consecutive frames (batch order) of each ordered subject."""
        if order not in DIFFERENCE_COEFFICIENTS:
            raise ValueError(f"smoothness order must be 1 or 2, got {order}")
        n = order + 1
        B, device = self.num_frames, self.subject.device
        if B < n:
            return DifferenceOperator.empty(B, order, device)
        # each subject's frames side by side, in batch order: a subject's frames need not be contiguous
        by_subject = torch.sort(self.subject, stable=True).indices
        windows = by_subject.unfold(0, n, 1)  # (B - order, n)
        same = (self.subject[windows] == self.subject[windows[:, :1]]).all(-1)
        same &= self.ordered[self.subject[windows[:, 0]]]
        return DifferenceOperator(windows[same].contiguous(), DIFFERENCE_COEFFICIENTS[order], B)

    @staticmethod
    def from_labels(labels: Sequence, ordered: bool | Sequence[bool] = False,
                    device: torch.device | str = "cpu") -> "FrameGroups":
        """Groups from one label per frame (subjects numbered in order of first appearance).

        ``ordered``: one flag for every subject, or one per subject in that numbering.
        """
        index: dict = {}
        subject = [index.setdefault(label, len(index)) for label in labels]
        flags = [bool(ordered)] * len(index) if isinstance(ordered, bool) else [bool(o) for o in ordered]
        if len(flags) != len(index):
            raise ValueError(f"ordered: {len(flags)} flags for {len(index)} subjects")
        return FrameGroups(torch.tensor(subject, dtype=torch.long, device=device),
                           torch.tensor(flags, dtype=torch.bool, device=device))

    @staticmethod
    def independent(num_frames: int, device: torch.device | str = "cpu") -> "FrameGroups":
        """Every frame its own subject (today's per-image fitting)."""
        return FrameGroups(torch.arange(num_frames, device=device),
                           torch.zeros(num_frames, dtype=torch.bool, device=device))
