"""Batched symmetric positive-definite solves (:mod:`diffface.linear_algebra`)."""

import numpy as np
import pytest
import torch

from diffface.linear_algebra import solve_spd
from diffface.threads import torch_threads


def _spd_systems(batch: int, size: int, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, size, size, dtype=torch.float64, generator=generator)
    matrix = a @ a.mT / size + 1e-3 * torch.eye(size, dtype=torch.float64)
    rhs = torch.randn(batch, size, 2, dtype=torch.float64, generator=generator)
    expected = torch.from_numpy(np.linalg.solve(matrix.numpy(), rhs.numpy()))
    return matrix.to(dtype), rhs.to(dtype), expected


@pytest.mark.parametrize("size", [8, 115, 222])
def test_solves_batches_after_the_thread_count_was_set(size):
    """The fits call torch.set_num_threads (torch_threads); afterwards torch's batched LU of matrices from about
    151 × 151 up returns wrong solutions or raises on MKL builds (pytorch/pytorch#142815): 222 is stage 2's joint
    Levenberg-Marquardt system. Cholesky must give numpy's float64 solution at every size."""
    matrix, rhs, expected = _spd_systems(4, size)
    with torch_threads(max(2, torch.get_num_threads())):
        solution, ok = solve_spd(matrix, rhs)
    assert ok.all()
    torch.testing.assert_close(solution, expected, rtol=1e-8, atol=1e-10)


def test_float32_and_a_leading_batch_shape():
    matrix, rhs, expected = _spd_systems(6, 30, torch.float32)
    solution, ok = solve_spd(matrix.view(2, 3, 30, 30), rhs.view(2, 3, 30, 2))
    assert ok.shape == (2, 3) and ok.all()
    torch.testing.assert_close(solution.view(6, 30, 2).double(), expected, rtol=1e-3, atol=1e-3)


def test_elements_that_are_not_positive_definite_are_nan_and_flagged_alone():
    matrix, rhs, expected = _spd_systems(4, 10)
    matrix[1] = torch.diag(torch.tensor([1.0] * 9 + [-1.0], dtype=torch.float64))  # indefinite
    matrix[2, 3, 3] = float("nan")
    solution, ok = solve_spd(matrix, rhs)
    assert ok.tolist() == [True, False, False, True]
    assert torch.isnan(solution[1:3]).all()
    torch.testing.assert_close(solution[[0, 3]], expected[[0, 3]], rtol=1e-8, atol=1e-10)
