"""FrameGroups and its temporal difference operator (diffface.fitting.frame_groups) against dense references."""

from __future__ import annotations

import pytest
import torch

from diffface.fitting.frame_groups import DIFFERENCE_COEFFICIENTS, DifferenceOperator, FrameGroups

# subjects 0..3 over 11 frames: two ordered runs, an unordered photo set between them, a one-frame video,
# and subject 1 interleaved with subject 2 (its frames are still a sequence in batch order)
LABELS = ["v0", "v0", "v0", "v0", "set", "set", "v1", "set", "v1", "v1", "one"]
ORDERED = [True, False, True, True]  # v0, set, v1, one (numbered by first appearance)


def _groups() -> FrameGroups:
    return FrameGroups.from_labels(LABELS, ORDERED)


def dense_difference(groups: FrameGroups, order: int) -> torch.Tensor:
    """The reference D: for every ordered subject, its frames in batch order, one row per window of order+1
    consecutive ones. Shape: -> (R, B) float64."""
    coefficients = DIFFERENCE_COEFFICIENTS[order]
    rows = []
    for s in range(groups.num_subjects):
        if not bool(groups.ordered[s]):
            continue
        frames = [t for t in range(groups.num_frames) if int(groups.subject[t]) == s]
        for start in range(len(frames) - order):
            row = torch.zeros(groups.num_frames, dtype=torch.float64)
            for c, t in zip(coefficients, frames[start:start + order + 1]):
                row[t] = c
            rows.append(row)
    return torch.stack(rows) if rows else torch.zeros(0, groups.num_frames, dtype=torch.float64)


def as_dense(operator: DifferenceOperator) -> torch.Tensor:
    eye = torch.eye(operator.num_frames, dtype=torch.float64)
    return operator.apply(eye)  # D·I, (R, B)


def _sorted_rows(matrix: torch.Tensor) -> list:
    return sorted(tuple(row.tolist()) for row in matrix)


def test_from_labels_numbers_subjects_by_first_appearance():
    groups = _groups()
    assert groups.subject.tolist() == [0, 0, 0, 0, 1, 1, 2, 1, 2, 2, 3]
    assert groups.ordered.tolist() == ORDERED
    assert (groups.num_frames, groups.num_subjects) == (11, 4)
    assert groups.frames_per_subject().tolist() == [4.0, 3.0, 3.0, 1.0]
    values = torch.arange(11, dtype=torch.float64)[:, None].expand(-1, 2)
    torch.testing.assert_close(groups.sum_per_subject(values)[:, 0],
                               torch.tensor([0 + 1 + 2 + 3, 4 + 5 + 7, 6 + 8 + 9, 10], dtype=torch.float64))
    assert FrameGroups.from_labels(["a", "b", "a"]).ordered.tolist() == [False, False]
    with pytest.raises(ValueError, match="2 flags for 3 subjects"):
        FrameGroups.from_labels(["a", "b", "c"], [True, False])


@pytest.mark.parametrize("order", [1, 2])
def test_difference_rows_stay_within_ordered_subjects_in_batch_order(order):
    groups = _groups()
    operator = groups.difference(order)
    assert operator.rows.shape[1] == order + 1 and operator.coefficients == DIFFERENCE_COEFFICIENTS[order]
    expected = dense_difference(groups, order)
    # v0: 4 frames, v1: 3 frames (interleaved with the photo set), the set and the one-frame video: none
    assert expected.shape[0] == (4 - order) + (3 - order)
    assert _sorted_rows(as_dense(operator)) == _sorted_rows(expected)
    subject = groups.subject[operator.rows]
    assert (subject == subject[:, :1]).all() and groups.ordered[subject[:, 0]].all()
    assert (operator.rows[:, 1:] > operator.rows[:, :-1]).all()  # forward in batch order


def test_interleaved_frames_of_one_video_are_still_neighbours():
    """Frames 6, 8, 9 of v1 are consecutive frames of that video although frame 7 (the photo set) sits between."""
    rows = _groups().difference(1).rows.tolist()
    assert [6, 8] in rows and [8, 9] in rows and [5, 6] not in rows and [3, 4] not in rows


def test_difference_of_too_few_frames_or_unordered_subjects_is_empty():
    assert FrameGroups.from_labels(["a", "a"], True).difference(2).num_rows == 0
    assert FrameGroups.from_labels(["a"] * 5, False).difference(1).num_rows == 0
    assert FrameGroups.independent(6).difference(1).num_rows == 0
    empty = FrameGroups.from_labels(["a"], True).difference(2)
    assert empty.apply(torch.ones(1, 3)).shape == (0, 3)
    torch.testing.assert_close(empty.apply_transpose(torch.zeros(0, 3)), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        _groups().difference(3)


@pytest.mark.parametrize("order", [1, 2])
def test_apply_and_transpose_match_the_dense_matrix_and_are_adjoint(order):
    groups = _groups()
    operator = groups.difference(order)
    dense = as_dense(operator)
    g = torch.Generator().manual_seed(order)
    x = torch.randn(groups.num_frames, 5, generator=g, dtype=torch.float64)
    y = torch.randn(operator.num_rows, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(operator.apply(x), dense @ x, rtol=0, atol=1e-12)
    torch.testing.assert_close(operator.apply_transpose(y), dense.T @ y, rtol=0, atol=1e-12)
    # <D x, y> = <x, Dᵀ y>
    torch.testing.assert_close((operator.apply(x) * y).sum(), (x * operator.apply_transpose(y)).sum(),
                               rtol=1e-12, atol=1e-12)
    # constants (order 1, 2) and straight lines (order 2) are in the null space of D
    ramp = torch.arange(groups.num_frames, dtype=torch.float64)[:, None]
    torch.testing.assert_close(operator.apply(torch.ones_like(ramp)), torch.zeros(operator.num_rows, 1, dtype=torch.float64))
    if order == 2:
        on_lines = operator.apply(ramp)
        # a straight line in batch index is straight for v0 only (v1's frames are not equally spaced)
        v0 = groups.subject[operator.rows[:, 0]] == 0
        torch.testing.assert_close(on_lines[v0], torch.zeros(int(v0.sum()), 1, dtype=torch.float64))


@pytest.mark.parametrize("order", [1, 2])
def test_gram_diagonal_is_the_diagonal_of_dtd(order):
    operator = _groups().difference(order)
    dense = as_dense(operator)
    torch.testing.assert_close(operator.gram_diagonal(), torch.diagonal(dense.T @ dense), rtol=0, atol=0)
    assert operator.gram_diagonal(torch.float32).dtype == torch.float32


def test_index_keeps_the_given_frames_and_renumbers_subjects_densely():
    groups = _groups()
    sub = groups.index(torch.tensor([6, 8, 9, 10]))  # v1 and the one-frame video
    assert sub.subject.tolist() == [0, 0, 0, 1] and sub.ordered.tolist() == [True, True]
    assert sub.difference(2).rows.tolist() == [[0, 1, 2]]
    mask = torch.zeros(11, dtype=torch.bool)
    mask[[0, 2, 3, 4, 5]] = True  # a frame of v0 dropped: its neighbours become neighbours
    sub = groups.index(mask.nonzero()[:, 0])
    assert sub.subject.tolist() == [0, 0, 0, 1, 1] and sub.ordered.tolist() == [True, False]
    assert sub.difference(1).rows.tolist() == [[0, 1], [1, 2]]


def test_independent_groups_and_bad_subjects():
    groups = FrameGroups.independent(4)
    assert groups.subject.tolist() == [0, 1, 2, 3] and not groups.ordered.any()
    assert groups.frames_per_subject().tolist() == [1.0] * 4
    with pytest.raises(ValueError, match=r"subject indices must lie in \[0, 2\)"):
        FrameGroups(torch.tensor([0, 2]), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="subject"):
        FrameGroups(torch.zeros(2, 2, dtype=torch.long), torch.tensor([True]))
