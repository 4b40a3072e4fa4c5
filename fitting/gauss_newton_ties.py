"""Stage 2 by Levenberg-Marquardt for frames tied together (videos, photo sets): one step per subject.

With :class:`~.frame_ties.FrameTies` the identity and albedo hold one row per subject and the smoothness prior
couples neighbouring frames, so the per-sample systems of :mod:`.gauss_newton` become one system per subject:
the unknowns are every frame's own variables ``x_t`` (pose, translation, expression, lighting) and the subject's
shared ones ``y`` (identity, albedo), and with ``J_t = [F_t | S_t]`` the frame's Jacobian split into its own and the
shared columns (the Jacobian of the per-frame residuals with respect to the shared variables gathered to the frame)

    ``[blockdiag_t(F_tᵀF_t) + DᵀD ⊗ diag(λ_s)   (F_tᵀS_t)_t] [δx]     [(F_tᵀρ_t)_t + (DᵀD ⊗ diag(λ_s))·x]``
    ``[(S_tᵀF_t)_t                             Σ_t S_tᵀS_t ] [δy] = −[Σ_t S_tᵀρ_t                        ]``

(block-arrow, plus ``DᵀD`` between neighbouring frames when smoothed; ``λ_s`` the smoothness weights), damped as
in :mod:`.gauss_newton` and solved by conjugate gradients (:mod:`.subject_cg`) preconditioned with the exact
inverse of its block-arrow part (the frames' blocks with the diagonal of ``λ_s·DᵀD``, eliminated onto the shared
block by a Schur complement): without smoothing the first iteration is the exact solution. The step is kept
per subject where the subject's energy (the sum over its frames, the priors of the shared variables counted
once, the smoothness rows) goes down; damping is per subject, so subjects in a batch never influence each
other.

A head k times larger at k times the distance makes the same photos, so its size is the prior's to decide; counted
once per subject it no longer holds a converged fit over many frames. With ``sequence.stage2_keep_size`` (default)
the shared identity's step is kept orthogonal to :func:`size_direction`: stage 2 leaves the size where stage 1
put it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .frame_groups import DifferenceOperator, FrameGroups
from .frame_ties import FrameTies
from .gauss_newton import damping_matrix, normal_equations
from .subject_cg import subject_conjugate_gradients

#: the smoothness weights (:attr:`FrameTies.weights`) of stage 2's per-frame variables
SMOOTHED_WEIGHTS = {"pose": "angles", "translation": "translation", "expression": "expression"}


def solve_tied(frame_blocks: torch.Tensor, cross: torch.Tensor, shared_blocks: torch.Tensor,
               frame_rhs: torch.Tensor, shared_rhs: torch.Tensor, groups: FrameGroups, operator: DifferenceOperator,
               weight: torch.Tensor, iterations: int = 200, tolerance: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the block-arrow system of the module docstring (plus ``DᵀD ⊗ diag(weight)`` on the frames' variables)
    per subject of ``groups`` (``operator``: the difference operator ``D``).

    Shape:
        frame_blocks: (B, Kf, Kf); cross: (B, Kf, Ks); shared_blocks: (S, Ks, Ks) (summed over the frames);
        frame_rhs: (B, Kf); shared_rhs: (S, Ks); weight: (Kf,) -> (B, Kf), (S, Ks).
    """
    subject = groups.subject
    coupled = operator.num_rows > 0 and bool((weight > 0).any())
    gram = operator.gram_diagonal(frame_rhs.dtype) if coupled else frame_rhs.new_zeros(frame_rhs.shape[0])
    frame_factor, _ = torch.linalg.cholesky_ex(frame_blocks + torch.diag_embed(gram[:, None] * weight))
    # the Schur complement of the frames' blocks: Σ_t (S_tᵀS_t − S_tᵀF_t (F_tᵀF_t + …)⁻¹ F_tᵀS_t)
    eliminated = torch.cholesky_solve(cross, frame_factor)  # (B, Kf, Ks)
    schur = shared_blocks - groups.sum_per_subject(cross.transpose(1, 2) @ eliminated)
    shared_factor, _ = torch.linalg.cholesky_ex(schur)

    def apply(x):
        frames, shared = x
        at_frames = shared.index_select(0, subject)
        out_frames = (frame_blocks @ frames[..., None] + cross @ at_frames[..., None])[..., 0]
        if coupled:
            out_frames = out_frames + weight * operator.apply_transpose(operator.apply(frames))
        out_shared = (shared_blocks @ shared[..., None])[..., 0] + groups.sum_per_subject(
            (cross.transpose(1, 2) @ frames[..., None])[..., 0])
        return out_frames, out_shared

    def precondition(r):
        frames, shared = r
        own = torch.cholesky_solve(frames[..., None], frame_factor)  # (B, Kf, 1)
        z_shared = torch.cholesky_solve(
            (shared - groups.sum_per_subject((cross.transpose(1, 2) @ own)[..., 0]))[..., None], shared_factor)[..., 0]
        z_frames = own[..., 0] - (eliminated @ z_shared.index_select(0, subject)[..., None])[..., 0]
        return z_frames, z_shared

    arange = torch.arange(groups.num_subjects, device=subject.device)
    return subject_conjugate_gradients(apply, precondition, (frame_rhs, shared_rhs), (subject, arange),
                                       groups.num_subjects, iterations if coupled else 1, tolerance)


def size_direction(model) -> torch.Tensor:
    """The unit direction of the identity coefficients (σ units) that scales the mean shape: ``α ↦
    ⟨A_id·α, M̄⟩ / ‖M̄‖²``, ``M̄`` the mean shape about its centroid, is the relative change of the head's size to
    first order; this is its gradient with respect to ``α/σ``, normalised. Shape: -> (K_id,)."""
    mean = model.mean_shape.reshape(-1, 3)
    centred = (mean - mean.mean(0)).reshape(-1)
    direction = (model.id_basis.T @ centred) * model.id_std
    return direction / direction.norm().clamp_min(1e-30)


class _SizeLock:
    """Restricts the shared identity's step of the subjects of several frames (a subject of one photo keeps an
    image's fit) to the complement of ``direction`` (:func:`size_direction`): with ``P = I − ddᵀ`` on the identity's
    coordinates, a damped system's shared block becomes ``PᵀAP + c·ddᵀ`` (:meth:`matrix`; the removed direction
    decoupled: its step is 0), its cross blocks ``cross·P`` (:meth:`cross`) and its right-hand side ``Pᵀb``
    (:meth:`rhs`).

    Shape:
        direction: (K_id,); offset: where the identity's coordinates start among the Ks shared ones.
    """

    def __init__(self, direction: torch.Tensor, offset: int, total: int, groups: FrameGroups):
        embedded = direction.new_zeros(total)
        embedded[offset:offset + direction.shape[0]] = direction
        pooled = groups.frames_per_subject(direction.dtype) > 1
        self.removed = torch.outer(embedded, embedded) * pooled.to(direction)[:, None, None]  # (S, Ks, Ks)
        self.projector = torch.eye(total, dtype=direction.dtype, device=direction.device) - self.removed
        self.subject, self.coordinates = groups.subject, slice(offset, offset + direction.shape[0])

    def matrix(self, shared_matrix: torch.Tensor) -> torch.Tensor:
        """A damped shared block. Shape: (S, Ks, Ks) -> (S, Ks, Ks)."""
        scale = shared_matrix.diagonal(dim1=1, dim2=2)[:, self.coordinates].mean(1).clamp_min(1e-12)
        return self.projector @ shared_matrix @ self.projector + scale[:, None, None] * self.removed

    def cross(self, cross: torch.Tensor) -> torch.Tensor:
        """Shape: (B, Kf, Ks) -> (B, Kf, Ks)."""
        return cross @ self.projector.index_select(0, self.subject)

    def rhs(self, shared_rhs: torch.Tensor) -> torch.Tensor:
        """Shape: (S, Ks) -> (S, Ks)."""
        return (self.projector @ shared_rhs[..., None])[..., 0]


@dataclass
class TiedSystem:
    """The Gauss-Newton normal equations of tied frames around a linearisation point (module docstring), before
    damping: ``½`` of the energy's Hessian approximation and gradient, per frame and per subject.

    Shape:
        frame_blocks: (B, Kf, Kf); cross: (B, Kf, Ks); shared_blocks: (S, Ks, Ks); frame_gradient: (B, Kf);
        shared_gradient: (S, Ks); weight: (Kf,) the smoothness weights of the frames' coordinates; energy: (S,);
        own, shared: the variables' names in the order of their coordinates (Kf = Σ own sizes, Ks = Σ shared).
    """

    frame_blocks: torch.Tensor
    cross: torch.Tensor
    shared_blocks: torch.Tensor
    frame_gradient: torch.Tensor
    shared_gradient: torch.Tensor
    weight: torch.Tensor
    energy: torch.Tensor
    own: tuple[str, ...]
    shared: tuple[str, ...]

    @staticmethod
    def linearise(energy_fn, variables: dict[str, torch.Tensor], names: tuple[str, ...],
                  to_params: Callable[[dict], object], ties: FrameTies, jacobian_chunk: int | None = None,
                  jacobian: str = "chain") -> "TiedSystem":
        """The system at ``variables`` (tied: shared rows per subject), for the coordinates of ``names``."""
        groups = ties.groups
        frames = _frames(ties, variables)
        residuals, normal, gradient = normal_equations(energy_fn, frames, names, to_params, jacobian_chunk, jacobian)
        rho = residuals.residuals

        own = tuple(name for name in names if not ties.shared(name))
        shared = tuple(name for name in names if ties.shared(name))
        columns, at = {}, 0
        for name in names:
            columns[name] = torch.arange(at, at + frames[name].shape[1], device=rho.device)
            at += frames[name].shape[1]
        own_index = torch.cat([columns[name] for name in own] + [columns[names[0]][:0]])
        shared_index = torch.cat([columns[name] for name in shared] + [columns[names[0]][:0]])

        def block(rows, cols):
            return normal.index_select(1, rows).index_select(2, cols)

        weight = torch.cat([ties.weights[SMOOTHED_WEIGHTS[name]].to(rho) if name in SMOOTHED_WEIGHTS
                            else rho.new_zeros(frames[name].shape[1]) for name in own] + [rho.new_zeros(0)])
        frame_gradient = gradient.index_select(1, own_index)
        if ties.operator.num_rows:  # the smoothness energy Σ λ (D x)²: half its gradient is λ DᵀD x
            x = torch.cat([frames[name] for name in own] + [rho.new_zeros(rho.shape[0], 0)], 1)
            frame_gradient = frame_gradient + weight * ties.operator.apply_transpose(ties.operator.apply(x))
        return TiedSystem(frame_blocks=block(own_index, own_index), cross=block(own_index, shared_index),
                          shared_blocks=groups.sum_per_subject(block(shared_index, shared_index)),
                          frame_gradient=frame_gradient,
                          shared_gradient=groups.sum_per_subject(gradient.index_select(1, shared_index)),
                          weight=weight, energy=groups.sum_per_subject(residuals.energy), own=own, shared=shared)


def _frames(ties: FrameTies, variables: dict) -> dict:
    """Per-frame variables (shared rows gathered to their frames)."""
    return {k: ties.gather(k, v) for k, v in variables.items()}


def tied_levenberg_marquardt_step(energy_fn, variables: dict[str, torch.Tensor], names: tuple[str, ...],
                                  to_params: Callable[[dict], object], damping: torch.Tensor, ties: FrameTies,
                                  max_tries: int = 6, jacobian_chunk: int | None = None,
                                  jacobian: str = "chain") -> torch.Tensor:
    """One Levenberg-Marquardt step on ``variables[names]`` (in place), per subject (module docstring).

    ``variables`` hold the shared variables' subject rows (:meth:`FrameTies.shared`) and the others' frame rows
    (not through the low-pass filter: :meth:`FrameTies.filtered` must be False); ``to_params`` maps per-frame
    variables to the frames' parameters. ``damping`` (λ, per subject) is updated in place as in
    :func:`~.gauss_newton.levenberg_marquardt_step`.

    Returns:
        (S,) bool: the subjects whose step was kept.

    Shape:
        variables[name]: (S or B, K_name); damping: (S,).
    """
    groups = ties.groups
    subject = groups.subject
    if any(ties.filtered(name) for name in names):
        raise ValueError("the Levenberg-Marquardt step needs the variables themselves, not filtered steps")
    variables = {k: v.detach() for k, v in variables.items()}
    system = TiedSystem.linearise(energy_fn, variables, names, to_params, ties, jacobian_chunk, jacobian)
    sizes = {name: variables[name].shape[1] for name in names}
    own, shared = system.own, system.shared
    frame_blocks, cross, shared_blocks = system.frame_blocks, system.cross, system.shared_blocks
    shared_cross, shared_rhs = cross, -system.shared_gradient
    lock = None
    if ties.sequence.stage2_keep_size and "identity" in shared:  # what does not depend on the damping: once
        offset = sum(sizes[name] for name in shared[:shared.index("identity")])
        lock = _SizeLock(size_direction(energy_fn.model).to(cross), offset, shared_blocks.shape[-1], groups)
        shared_cross, shared_rhs = lock.cross(cross), lock.rhs(shared_rhs)

    start_energy = system.energy
    start = {name: variables[name].clone() for name in names}
    kept = torch.zeros_like(damping, dtype=torch.bool)
    for _ in range(max_tries):
        shared_matrix = shared_blocks + damping[:, None, None] * damping_matrix(shared_blocks)
        if lock is not None:
            shared_matrix = lock.matrix(shared_matrix)
        frame_damping = damping.index_select(0, subject)
        step_frames, step_shared = solve_tied(
            frame_blocks + frame_damping[:, None, None] * damping_matrix(frame_blocks), shared_cross, shared_matrix,
            -system.frame_gradient, shared_rhs, groups, ties.operator, system.weight)
        moving = ~kept
        step_frames = torch.nan_to_num(step_frames) * moving.index_select(0, subject)[:, None]
        step_shared = torch.nan_to_num(step_shared) * moving[:, None]
        trial = dict(variables)
        for part_names, step in ((own, step_frames), (shared, step_shared)):
            for name, part in zip(part_names, step.split([sizes[name] for name in part_names], 1)):
                trial[name] = start[name] + part
        with torch.no_grad():
            energy = groups.sum_per_subject(energy_fn(to_params(_frames(ties, trial)))["energy"])
        better = torch.isfinite(energy) & (energy < start_energy) & ~kept
        for name in names:
            rows = better if ties.shared(name) else better.index_select(0, subject)
            variables[name].copy_(torch.where(rows[:, None], trial[name], variables[name]))
        damping.copy_(torch.where(better, damping * 0.3, torch.where(kept, damping, damping * 10)))
        kept |= better
        if kept.all():
            break
    return kept

