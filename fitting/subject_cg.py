"""Preconditioned conjugate gradients run per subject over a batch of subjects' systems.

The fits of videos and photo sets solve one symmetric positive-definite system per subject, batched: the unknowns
are split into parts (per-frame rows, per-subject rows), each row owned by one subject, and the operator never
couples two subjects. Every subject has its own step sizes and stops at its own convergence, so a subject's
solution does not depend on the rest of the batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Parts = tuple[torch.Tensor, ...]


def subject_conjugate_gradients(apply: Callable[[Parts], Parts], precondition: Callable[[Parts], Parts],
                                rhs: Sequence[torch.Tensor], owners: Sequence[torch.Tensor], num_subjects: int,
                                iterations: int = 200, tolerance: float = 1e-6) -> Parts:
    """Solve ``A x = b`` per subject by preconditioned conjugate gradients.

    Args:
        apply: ``x ↦ A x`` on the parts (A symmetric positive (semi-)definite, block diagonal over subjects).
        precondition: ``r ↦ M⁻¹ r``, ``M`` symmetric positive-definite (an exact ``M = A`` converges in one
            iteration).
        rhs: ``b``, one tensor per part.
        owners: for each part, the subject that owns each row.
        iterations: most iterations; each subject stops when its residual norm fell by ``tolerance``.

    Shape:
        rhs[i]: (R_i, K_i); owners[i]: (R_i,) in [0, num_subjects) -> parts like rhs.
    """
    rhs = tuple(rhs)

    def per_subject(a: Parts, b: Parts) -> torch.Tensor:
        out = rhs[0].new_zeros(num_subjects)
        for part_a, part_b, owner in zip(a, b, owners):
            out = out.index_add(0, owner, (part_a * part_b).sum(-1))
        return out

    def ratio(num, den):
        return torch.where(den.abs() > 0, num / torch.where(den.abs() > 0, den, torch.ones_like(den)),
                           torch.zeros_like(num))

    def axpy(scale: torch.Tensor, x: Parts, y: Parts) -> Parts:  # y + scale[subject]·x
        return tuple(part_y + scale[owner, None] * part_x for part_x, part_y, owner in zip(x, y, owners))

    x = tuple(torch.zeros_like(part) for part in rhs)
    r = rhs
    z = precondition(r)
    p, rz = z, per_subject(r, z)
    start = per_subject(r, r).sqrt()
    done = torch.zeros_like(start, dtype=torch.bool)
    for iteration in range(iterations):
        ap = apply(p)
        alpha = torch.where(done, torch.zeros_like(rz), ratio(rz, per_subject(p, ap)))
        x = axpy(alpha, p, x)
        r = axpy(-alpha, ap, r)
        done = done | (per_subject(r, r).sqrt() <= tolerance * start)
        if iteration == iterations - 1 or bool(done.all()):
            break
        z = precondition(r)
        rz_new = per_subject(r, z)
        p = axpy(ratio(rz_new, rz), p, z)
        rz = rz_new
    return x
