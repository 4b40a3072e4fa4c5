"""Batched solves of symmetric positive-definite systems (normal equations with a ridge or damping) by Cholesky.

Every linear system the fits solve is ``JᵀWJ`` plus a positive ridge or Levenberg-Marquardt damping, so it is
symmetric positive-definite and Cholesky is the right factorisation (about half an LU's work). It is also the safe
one on CPUs: in torch's MKL builds (seen with 2.5-2.13), once ``torch.set_num_threads`` has been called in the
process (``fit_landmarks`` and other blocks of :func:`~diffface.threads.torch_threads` call it), a *batched* LU of
matrices of about 151 × 151 or larger runs ``getrf`` on several threads at once and MKL's row swaps race:
``torch.linalg.solve`` / ``solve_ex`` / ``inv`` then raise "Pivots given to lu_solve must all be greater or equal
to 1" or silently return wrong solutions (pytorch/pytorch#142815). Batched Cholesky is not affected.
"""

from __future__ import annotations

import torch


def solve_spd(matrix: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``matrix⁻¹ · rhs`` per batch element, ``matrix`` symmetric positive-definite.

    Returns:
        the solution, and ``ok``: False where Cholesky failed (the matrix is not numerically positive-definite: a
        zero ridge on a rank-deficient system, or NaN or inf in it); the solution is NaN there, so per-sample
        checks downstream (a rejected step, a sample reset to its last good values) treat it as they treat a
        diverged sample, and the batch's other elements are unaffected.

    Shape:
        matrix: (..., N, N); rhs: (..., N, K) -> (..., N, K), (...,) bool.
    """
    factor, info = torch.linalg.cholesky_ex(matrix)
    ok = (info == 0) & torch.isfinite(factor).flatten(-2).all(-1)
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    solution = torch.cholesky_solve(rhs, torch.where(ok[..., None, None], factor, eye))
    return torch.where(ok[..., None, None], solution, torch.full_like(solution, float("nan"))), ok
