"""Stage 2 by Levenberg-Marquardt over frames tied together (:mod:`diffface.fitting.gauss_newton_ties`) and the
per-subject conjugate gradients it solves with (:mod:`diffface.fitting.subject_cg`). Tiny: 2 subjects × 3 frames
at 48 px, float64."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffface.alignment import procrustes
from diffface.app.synth import SceneConfig, sample_scenes
from diffface.fitting.frame_groups import FrameGroups
from diffface.fitting.frame_ties import FrameTies
from diffface.fitting.gauss_newton import levenberg_marquardt_step
from diffface.fitting.gauss_newton_ties import (TiedSystem, size_direction, solve_tied,
                                                tied_levenberg_marquardt_step)
from diffface.fitting.sequence_fitting import SequenceFitConfig
from diffface.fitting.texture_fitting import TextureFitConfig, _Stage2Energy, _scaled_variables, _to_params, fit_texture

from .conftest import photographed

F64 = torch.float64
SUBJECTS, FRAMES, SIZE = 2, 3, 48
LABELS = [s for s in range(SUBJECTS) for _ in range(FRAMES)]
#: the step's variables with the appearance in it (the optimizer's default, joint_appearance)
NAMES = ("pose", "translation", "identity", "expression", "lighting", "albedo")
CONFIG = TextureFitConfig(term="image", r_id=1e-3, r_beta=0.1, optimizer="gauss_newton")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- solve_tied -----------------------------------------------------------------------------------------------------

def _random_tied(seed: int, groups: FrameGroups, own: int = 5, shared: int = 4):
    """A block-arrow system from genuine per-frame normal equations ``JᵀJ`` (+ a small ridge)."""
    g = torch.Generator().manual_seed(seed)
    jacobian = torch.randn(groups.num_frames, 12, own + shared, generator=g, dtype=F64)
    normal = jacobian.transpose(1, 2) @ jacobian + 0.1 * torch.eye(own + shared, dtype=F64)
    frame_rhs = torch.randn(groups.num_frames, own, generator=g, dtype=F64)
    shared_rhs = torch.randn(groups.num_subjects, shared, generator=g, dtype=F64)
    weight = 10 ** (4 * torch.rand(own, generator=g, dtype=F64) - 1)  # λ from 0.1 to 1000
    weight[-1] = 0.0  # a coordinate the prior does not smooth (the lighting)
    return (normal[:, :own, :own], normal[:, :own, own:], groups.sum_per_subject(normal[:, own:, own:]),
            frame_rhs, shared_rhs, weight)


def _dense_tied(system, operator, frames: list[int], subject: int) -> torch.Tensor:
    """The reference: subject ``subject``'s whole system assembled densely, by torch.linalg.solve.
    -> (len(frames)·Kf + Ks,)."""
    frame_blocks, cross, shared_blocks, frame_rhs, shared_rhs, weight = system
    D = operator.apply(torch.eye(operator.num_frames, dtype=F64))[:, frames]  # (R, T): rows touch one subject
    top = torch.block_diag(*frame_blocks[frames]) + torch.kron(D.T @ D, torch.diag(weight))
    side = torch.cat(list(cross[frames]), 0)
    matrix = torch.cat([torch.cat([top, side], 1), torch.cat([side.T, shared_blocks[subject]], 1)], 0)
    return torch.linalg.solve(matrix, torch.cat([frame_rhs[frames].reshape(-1), shared_rhs[subject]]))


@pytest.mark.parametrize("order", [1, 2])
def test_solve_tied_equals_a_dense_solve_per_subject(order):
    # a video of 7 frames, a photo set of 3 (no difference rows) and a video of one frame
    groups = FrameGroups.from_labels([0] * 7 + [1] * 3 + [2], [True, False, True])
    operator = groups.difference(order)
    system = _random_tied(order, groups)
    frames_x, shared_y = solve_tied(*system[:5], groups, operator, system[5], iterations=500, tolerance=1e-13)
    for s in range(groups.num_subjects):
        frames = (groups.subject == s).nonzero()[:, 0].tolist()
        expected = _dense_tied(system, operator, frames, s)
        torch.testing.assert_close(frames_x[frames].reshape(-1), expected[:-shared_y.shape[1]], rtol=0, atol=1e-8)
        torch.testing.assert_close(shared_y[s], expected[-shared_y.shape[1]:], rtol=0, atol=1e-8)
    # the smoothness coupling matters: the same system without difference rows gives another answer for the video
    alone, _ = solve_tied(*system[:5], groups, groups.difference(order).empty(groups.num_frames), system[5])
    assert (alone[:7] - frames_x[:7]).abs().max() > 1e-3
    torch.testing.assert_close(alone[7:10], frames_x[7:10], rtol=0, atol=1e-8)


def test_solve_tied_without_smoothing_is_exact_in_one_iteration():
    """The preconditioner is the exact inverse of the block-arrow matrix (a Schur complement onto the shared
    variables): with nothing coupling neighbouring frames one iteration solves it."""
    groups = FrameGroups.from_labels([0] * 4 + [1] * 2, [True, True])
    operator = groups.difference(2).empty(groups.num_frames)
    system = _random_tied(3, groups)
    frames_x, shared_y = solve_tied(*system[:5], groups, operator, system[5], iterations=1)
    for s in range(groups.num_subjects):
        frames = (groups.subject == s).nonzero()[:, 0].tolist()
        expected = _dense_tied(system, operator, frames, s)
        torch.testing.assert_close(torch.cat([frames_x[frames].reshape(-1), shared_y[s]]), expected,
                                   rtol=0, atol=1e-10)


# -- the step on rendered frames -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene(model, model64):
    """Two subjects turning their heads over three frames (the per-pixel renderer over random backgrounds,
    float64), their landmarks, and a start: the mean identity, the pose 0.03 rad off, albedo and lighting solved."""
    subjects = sample_scenes(model, SUBJECTS, SceneConfig(seed=5, image_size=SIZE, focal_px=1000.0 * SIZE / 224,
                                                          yaw_deg=20.0))
    truth = subjects.index(torch.tensor(LABELS))
    truth = replace(truth, **{k: v.double() for k, v in vars(truth).items() if torch.is_tensor(v)})
    yaw = torch.tensor([-0.2, 0.0, 0.2], dtype=F64).repeat(SUBJECTS)
    truth = replace(truth, angles=truth.angles + torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], -1))
    images, landmarks, start = photographed(model64, truth, SIZE)
    return truth, images, landmarks, start


def _problem(model64, scene, groups: FrameGroups, sequence: SequenceFitConfig, config: TextureFitConfig = CONFIG,
             frames=slice(None), noise: float = 0.0):
    """The tied energy, tied variables (shared rows: the subject's mean, moved off it a little) and ``to_params``;
    ``noise``: the photos' Gaussian noise."""
    _, images, landmarks, start = scene
    images = images + noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    start = start.index(frames)
    ties = FrameTies(groups, sequence, model64, config.c_lands, F64, images.device, filter_steps=False)
    energy_fn = _Stage2Energy(model64, images[frames], landmarks[frames], config, ties)
    variables = {k: ties.initial(k, v.detach()).clone() for k, v in _scaled_variables(model64, start).items()}
    g = torch.Generator().manual_seed(11)  # the same draw whichever frames are taken
    identity = 0.3 * torch.randn(len(LABELS), variables["identity"].shape[1], generator=g, dtype=F64)
    expression = 0.2 * torch.randn(len(LABELS), variables["expression"].shape[1], generator=g, dtype=F64)
    variables["identity"] += identity[:variables["identity"].shape[0]]
    variables["expression"] += expression[:variables["expression"].shape[0]]
    return ties, energy_fn, variables, lambda v: _to_params(model64, v, start.focal, start.principal_point)


@pytest.mark.parametrize("norm", ["l2", "l21"])
def test_tied_system_has_half_the_subjects_energy_gradient(model64, scene, norm):
    """The assembled right-hand side is ½∇ of the tied energy (the texture term by its IRLS majoriser, the shared
    priors counted once, the smoothness rows), in every frame coordinate and every shared one. The photos are noisy:
    IRLS clamps the weights of residuals below 10⁻³, where the majoriser's gradient is not the norm's."""
    groups = FrameGroups.from_labels(LABELS, True)
    ties, energy_fn, variables, to_params = _problem(model64, scene, groups, SequenceFitConfig(smooth=True),
                                                     replace(CONFIG, norm=norm), noise=0.05)
    system = TiedSystem.linearise(energy_fn, variables, NAMES, to_params, ties)
    assert system.own == ("pose", "translation", "expression", "lighting")
    assert system.shared == ("identity", "albedo")
    leaves = {k: v.clone().requires_grad_(True) for k, v in variables.items()}
    frames = {k: ties.gather(k, v) for k, v in leaves.items()}
    energy = energy_fn(to_params(frames))["energy"]
    torch.testing.assert_close(system.energy, groups.sum_per_subject(energy.detach()), rtol=1e-12, atol=0)
    gradient = dict(zip(NAMES, torch.autograd.grad(energy.sum(), [leaves[name] for name in NAMES])))
    torch.testing.assert_close(system.frame_gradient, torch.cat([gradient[n] for n in system.own], 1) / 2,
                               rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(system.shared_gradient, torch.cat([gradient[n] for n in system.shared], 1) / 2,
                               rtol=1e-7, atol=1e-10)
    with torch.no_grad():
        assert float(ties.smoothness(*(frames[n] for n in ("pose", "translation", "expression"))).sum()) > 0


def test_independent_frames_take_the_untied_step(model64, scene):
    """Every frame its own subject, no smoothing: the tied step is the per-sample step of gauss_newton.py."""
    groups = FrameGroups.independent(len(LABELS))
    ties, tied_fn, tied, to_params = _problem(model64, scene, groups, SequenceFitConfig())
    _, images, landmarks, _ = scene
    plain_fn = _Stage2Energy(model64, images, landmarks, CONFIG)
    plain = {k: v.clone() for k, v in tied.items()}
    damping = torch.full((len(LABELS),), 1e-2, dtype=F64)
    tied_damping = damping.clone()
    kept = levenberg_marquardt_step(plain_fn, plain, NAMES, to_params, damping)
    tied_kept = tied_levenberg_marquardt_step(tied_fn, tied, NAMES, to_params, tied_damping, ties)
    assert kept.all() and torch.equal(kept, tied_kept) and torch.equal(damping, tied_damping)
    for name in NAMES:
        torch.testing.assert_close(tied[name], plain[name], rtol=0, atol=1e-8)


def test_tied_step_lowers_each_subjects_energy_and_keeps_subjects_independent(model64, scene):
    sequence = SequenceFitConfig(smooth=True)

    def step(subjects: int):
        frames = slice(0, subjects * FRAMES)
        groups = FrameGroups.from_labels(LABELS[frames], True)
        ties, energy_fn, variables, to_params = _problem(model64, scene, groups, sequence, frames=frames)
        before = groups.sum_per_subject(energy_fn(to_params({k: ties.gather(k, v) for k, v in variables.items()}))
                                        ["energy"])
        damping = torch.full((subjects,), 1e-2, dtype=F64)
        kept = tied_levenberg_marquardt_step(energy_fn, variables, NAMES, to_params, damping, ties)
        after = groups.sum_per_subject(energy_fn(to_params({k: ties.gather(k, v) for k, v in variables.items()}))
                                       ["energy"])
        return variables, before, after, kept

    variables, before, after, kept = step(2)
    assert kept.all() and (after < before).all()
    alone, before_alone, after_alone, _ = step(1)
    torch.testing.assert_close(before_alone, before[:1], rtol=1e-12, atol=0)
    torch.testing.assert_close(after_alone, after[:1], rtol=1e-9, atol=0)
    for name in NAMES:
        rows = 1 if name in ("identity", "albedo") else FRAMES
        torch.testing.assert_close(alone[name], variables[name][:rows], rtol=0, atol=1e-8)


def _identity_error(model, params, truth):
    """Mean distance of the neutral shapes after a similarity Procrustes alignment (stage 2 keeps the pooled head's
    size, ``SequenceFitConfig.stage2_keep_size``). Shape: -> (B,)."""
    vertices = model.shape(params.alpha_id, torch.zeros_like(params.alpha_exp))
    reference = model.shape(truth.alpha_id, torch.zeros_like(truth.alpha_exp))
    return (procrustes(vertices, reference, with_scale=True).apply(vertices) - reference).norm(dim=-1).mean(1)


def test_fit_texture_gauss_newton_fits_one_identity_per_subject(model64, scene):
    truth, images, landmarks, start = scene
    groups = FrameGroups.from_labels(LABELS, True)
    config = replace(CONFIG, rounds=4)
    result = fit_texture(model64, images, landmarks, start, config, groups=groups,
                         sequence=SequenceFitConfig(smooth=True))
    assert not result.diverged.any()
    for name in ("alpha_id", "beta"):
        value = getattr(result.params, name).view(SUBJECTS, FRAMES, -1)
        assert (value == value[:, :1]).all(), name
    assert not (result.params.angles[:FRAMES] == result.params.angles[0]).all()
    initial = fit_texture(model64, images, landmarks, start, replace(config, rounds=0), groups=groups,
                          sequence=SequenceFitConfig(smooth=True)).energy
    history = [groups.sum_per_subject(energy) for energy in [initial] + result.history]
    assert all((after < before).all() for before, after in zip(history, history[1:]))
    # the identity starts at the mean: four steps bring the neutral shapes closer to the photographed ones on the
    # whole (similarity-aligned, measured 8.45 -> 5.36 mm and 3.66 -> 3.81 mm: at 48 px one subject may not gain)
    assert _identity_error(model64, result.params, truth).mean() < 0.9 * _identity_error(model64, start, truth).mean()


def _size(model, alpha_id: torch.Tensor) -> torch.Tensor:
    """The neutral shape's size relative to the mean shape: the least-squares scale of the mean (about its centroid)
    that best explains it. Shape: (B, K_id) -> (B,)."""
    mean = model.mean_shape.reshape(-1, 3)
    centred = mean - mean.mean(0)
    shape = model.shape(alpha_id, torch.zeros(alpha_id.shape[0], model.exp_dims, dtype=alpha_id.dtype))
    shape = shape - shape.mean(1, keepdim=True)
    return (shape * centred).sum((1, 2)) / centred.pow(2).sum()


def test_size_direction_is_the_normalised_gradient_of_the_heads_size(model64):
    coefficients = torch.zeros(1, model64.id_dims, dtype=F64, requires_grad=True)
    (gradient,) = torch.autograd.grad(_size(model64, coefficients * model64.id_std).sum(), coefficients)
    torch.testing.assert_close(size_direction(model64), gradient[0] / gradient.norm(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("keep_size", [True, False])
def test_stage2_keeps_the_shared_heads_size(model64, scene, keep_size):
    """With ``stage2_keep_size`` the pooled identity moves, its size does not; a subject of one frame moves freely."""
    _, images, landmarks, start = scene
    labels = LABELS[:4]  # subject 0: three frames, subject 1: one
    groups = FrameGroups.from_labels(labels, True)
    frames = slice(0, 4)
    sequence = SequenceFitConfig(stage2_keep_size=keep_size)
    start = replace(start.index(frames), alpha_id=start.alpha_id[frames] + 0.5 * model64.id_std)  # off the mean
    result = fit_texture(model64, images[frames], landmarks[frames], start, replace(CONFIG, rounds=2), groups=groups,
                         sequence=sequence)
    before, after = _size(model64, start.alpha_id[[0, 3]]), _size(model64, result.params.alpha_id[[0, 3]])
    assert (result.params.alpha_id[0] - start.alpha_id[0]).abs().max() > 0.1 * float(model64.id_std.max())
    if keep_size:
        torch.testing.assert_close(after[0], before[0], rtol=1e-9, atol=0)
    else:
        assert (after[0] - before[0]).abs() > 1e-4
    assert (after[1] - before[1]).abs() > 1e-4  # the single photo keeps an image's fit
