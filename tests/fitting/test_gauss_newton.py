"""Stage 2 by Levenberg-Marquardt (``optimizer="gauss_newton"``, :mod:`diffface.fitting.gauss_newton`)."""

from dataclasses import replace

import pytest
import torch

from diffface.alignment import procrustes
from diffface.app.synth import SceneConfig, sample_scenes
from diffface.fitting.gauss_newton import Stage2Residuals, forward_jacobian, levenberg_marquardt_step
from diffface.fitting.texture_fitting import TextureFitConfig, _Stage2Energy, _scaled_variables, _to_params, fit_texture

from .conftest import photographed

SIZE = 48
GEOMETRY = ("pose", "translation", "identity", "expression")


@pytest.fixture(scope="module")
def scene(model, model64):
    """Two faces photographed by the per-pixel renderer over random backgrounds (float64), their landmarks, and a
    start: the mean identity, the pose 0.03 rad off, albedo and lighting solved."""
    truth = sample_scenes(model, 2, SceneConfig(seed=5, image_size=SIZE, focal_px=1000.0 * SIZE / 224))
    truth = replace(truth, **{k: v.double() for k, v in vars(truth).items() if torch.is_tensor(v)})
    images, landmarks, start = photographed(model64, truth, SIZE)
    return truth, images, landmarks, start


def _config(**changes):
    return TextureFitConfig(term="image", r_id=1e-3, **changes)


def _geometry_gradient(value, params):
    tensors = [params.angles, params.translation, params.alpha_id, params.alpha_exp]
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, tensors)])


def _with_geometry_grad(params):
    return replace(params, **{name: getattr(params, name).detach().clone().requires_grad_(True)
                              for name in ("angles", "translation", "alpha_id", "alpha_exp")})


@pytest.mark.parametrize("norm", ["l1", "l2", "l21"])
def test_residuals_have_the_energys_gradient(model64, scene, norm):
    """‖ρ‖² majorises the energy at the linearisation point: same gradient in every geometric coordinate."""
    _, images, landmarks, start = scene
    energy_fn = _Stage2Energy(model64, images, landmarks, _config(norm=norm))
    residuals = Stage2Residuals(energy_fn, start)
    params = _with_geometry_grad(start)
    expected = _geometry_gradient(energy_fn(params)["energy"].sum(), params)
    params = _with_geometry_grad(start)
    actual = _geometry_gradient(residuals(params).pow(2).sum(), params)
    # exact for l2; l1 and l2,1's IRLS weights floor |r| at 1e-3 (the norms' own epsilon is 1e-6), so the pixels
    # (l2,1) or channels (l1: about 1 % of the gradient on these noise-free photos) that close differ slightly
    tolerance = {"l2": 1e-10, "l21": 1e-3, "l1": 2e-2}[norm]
    assert float((actual - expected).norm()) < tolerance * float(expected.norm())
    assert float(expected.norm()) > 1e-3


def test_forward_jacobian_matches_backward_products(model64, scene):
    _, images, landmarks, start = scene
    energy_fn = _Stage2Energy(model64, images, landmarks, _config())
    residuals = Stage2Residuals(energy_fn, start)
    variables = _scaled_variables(model64, start)
    to_params = lambda v: _to_params(model64, v, start.focal, start.principal_point)  # noqa: E731
    names = ("pose", "translation", "expression")  # the identity's columns are computed the same way
    jacobian = forward_jacobian(lambda v: residuals(to_params(v)), variables, names)
    with torch.no_grad():
        rho = residuals(to_params(variables))
    assert jacobian.shape == (2, rho.shape[1], 3 + 3 + model64.exp_dims)
    weights = torch.randn(rho.shape, dtype=rho.dtype, generator=torch.Generator().manual_seed(0))
    gradients = torch.autograd.grad((residuals(to_params(variables)) * weights).sum(),
                                    [variables[name] for name in names])
    torch.testing.assert_close((jacobian.transpose(1, 2) @ weights[..., None])[..., 0], torch.cat(gradients, 1),
                               rtol=1e-8, atol=1e-10)
    # the columns batched differently (one per pass; 5 per pass, the last pass shorter): the same Jacobian
    for chunk_size in (1, 5):
        torch.testing.assert_close(forward_jacobian(lambda v: residuals(to_params(v)), variables, names, chunk_size),
                                   jacobian, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("norm, names", [("l2", GEOMETRY), ("l21", GEOMETRY),
                                         ("l21", ("lighting",) + GEOMETRY + ("albedo",)), ("l2", ("lighting",))])
def test_chain_jacobian_matches_forward_jacobian(model64, scene, norm, names):
    """Through the masked pixels' triangle corners (18 local derivatives per pixel, 27 with the albedo; the
    corners' derivatives over the vertices; the lighting's columns on the pixels): the same Jacobian as forward
    mode through the whole renderer, for every coordinate, in the order of ``names``."""
    _, images, landmarks, start = scene
    energy_fn = _Stage2Energy(model64, images, landmarks, _config(norm=norm))
    residuals = Stage2Residuals(energy_fn, start)
    variables = {k: v.detach() for k, v in _scaled_variables(model64, start).items()}
    to_params = lambda v: _to_params(model64, v, start.focal, start.principal_point)  # noqa: E731
    direct = forward_jacobian(lambda v: residuals(to_params(v)), variables, names)
    for chunk_size in (None, 7):
        chain = residuals.jacobian(to_params, variables, names, chunk_size)
        assert chain.shape == direct.shape == (2, residuals.residuals.shape[1],
                                               sum(variables[name].shape[1] for name in names))
        torch.testing.assert_close(chain, direct, rtol=1e-9, atol=1e-11)
    for name, block in zip(names, direct.split([variables[name].shape[1] for name in names], 2)):
        assert block[:, :residuals.index.shape[1] * 3].abs().amax() > 1e-2, name  # the pixels' part is not empty


def test_residuals_square_to_the_energy(model64, scene):
    """With the l2 norm the residuals' squared norm is the whole stage-2 energy, the albedo prior included."""
    _, images, landmarks, start = scene
    energy_fn = _Stage2Energy(model64, images, landmarks, _config(norm="l2", r_beta=0.1))
    residuals = Stage2Residuals(energy_fn, start)
    torch.testing.assert_close(residuals.residuals.pow(2).sum(1), residuals.energy, rtol=1e-9, atol=0)
    assert float(start.beta.abs().amax()) > 0  # the albedo prior is not 0 here


def test_step_lowers_each_energy_and_keeps_samples_independent(model64, scene):
    _, images, landmarks, start = scene

    def step(sl):
        energy_fn = _Stage2Energy(model64, images[sl], landmarks[sl], _config())
        params = start.index(sl)
        variables = {k: v.detach() for k, v in _scaled_variables(model64, params).items()}
        before = energy_fn(params)["energy"]
        damping = torch.full((before.shape[0],), 1e-2, dtype=torch.float64)
        kept = levenberg_marquardt_step(energy_fn, variables, GEOMETRY,
                                        lambda v: _to_params(model64, v, params.focal, params.principal_point), damping)
        after = energy_fn(_to_params(model64, variables, params.focal, params.principal_point))["energy"]
        return variables, before, after, kept, damping

    variables, before, after, kept, damping = step(slice(0, 2))
    assert kept.all() and (after < before).all()
    assert torch.allclose(damping, torch.full_like(damping, 3e-3))
    alone, _, after_alone, _, _ = step(slice(1, 2))
    for name in GEOMETRY:
        torch.testing.assert_close(alone[name], variables[name][1:], rtol=0, atol=1e-9)
    torch.testing.assert_close(after_alone, after[1:], rtol=1e-10, atol=0)


def _shape_error(model, params, truth):
    vertices = model.shape(params.alpha_id, params.alpha_exp)
    reference = model.shape(truth.alpha_id, truth.alpha_exp)
    return (procrustes(vertices, reference).apply(vertices) - reference).norm(dim=-1).mean(1)


@pytest.mark.parametrize("joint_appearance", [True, False])
def test_fit_texture_gauss_newton_recovers_shape(model64, scene, joint_appearance):
    """With the appearance in the step (the default) and with the geometry alone. The joint system (222 unknowns)
    is the size at which torch's batched LU failed after a thread-count change: this test then failed when it ran
    after another test that had called torch_threads (tests/test_linear_algebra.py)."""
    truth, images, landmarks, start = scene
    result = fit_texture(model64, images, landmarks, start,
                         _config(optimizer="gauss_newton", rounds=2, joint_appearance=joint_appearance))
    assert not result.diverged.any()
    initial = _Stage2Energy(model64, images, landmarks, _config())(start)["energy"]
    assert (result.history[0] < initial).all() and (result.history[1] < result.history[0]).all()
    assert (result.energy < initial).all()
    # the identity starts at the mean: two steps bring the shape closer to the photographed one
    assert (_shape_error(model64, result.params, truth) < _shape_error(model64, start, truth)).all()


def test_gauss_newton_settings_are_checked():
    with pytest.raises(ValueError, match="term='image'"):
        TextureFitConfig(optimizer="gauss_newton", r_id=1e-3)
    with pytest.raises(ValueError, match="r_id > 0"):
        TextureFitConfig(optimizer="gauss_newton", term="image")
    with pytest.raises(ValueError, match="jacobian must be one of"):
        TextureFitConfig(jacobian="numeric")
    with pytest.raises(ValueError, match="jacobian_chunk"):
        TextureFitConfig(jacobian_chunk=-1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TextureFitConfig(optimizer="lbfgs")
