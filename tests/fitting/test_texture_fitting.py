from dataclasses import replace

import pytest
import torch

from diffface.fitting.texture_fitting import (TextureFitConfig, _reset_bad_samples, fit_texture, irls_weights,
                                              solve_albedo, solve_lighting, texture_norm, weighted_least_squares)
from diffface.morphable_model import load_morphable_model
from diffface.renderers import FaceRenderer, UVFrame, lighting_frame_normals
from diffface.app.synth import SceneConfig, random_backgrounds, sample_scenes
from diffface.landmark_marching import project_landmarks


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="module")
def scene(model):
    truth = sample_scenes(model, 2, SceneConfig(seed=5, image_size=112, focal_px=500.0))
    with torch.no_grad():
        photos = FaceRenderer(model, 112, backend="builtin")(truth, random_backgrounds(2, 112, seed=5)).images
    landmarks, _ = project_landmarks(model, truth)
    return truth, photos.clamp(0, 1).permute(0, 3, 1, 2).contiguous(), landmarks


def test_texture_norms_against_direct_sums():
    g = torch.Generator().manual_seed(0)
    rendered, target = torch.rand(2, 3, 5, 5, generator=g), torch.rand(2, 3, 5, 5, generator=g)
    mask = (torch.rand(2, 1, 5, 5, generator=g) > 0.4).float()
    for b in range(2):
        m = mask[b, 0].bool()
        r = (target[b] - rendered[b])[:, m]  # (3, N)
        expected = {"l1": r.abs().sum(), "l2": r.pow(2).sum(), "l21": r.pow(2).sum(0).sqrt().sum()}
        for norm, value in expected.items():
            torch.testing.assert_close(texture_norm(rendered, target, mask, norm)[b], value / m.sum())
    with pytest.raises(ValueError, match="norm"):
        texture_norm(rendered, target, mask, "l3")


def test_weighted_least_squares_and_irls_weights():
    g = torch.Generator().manual_seed(1)
    design = torch.randn(3, 40, 4, generator=g, dtype=torch.float64)
    truth = torch.randn(3, 4, generator=g, dtype=torch.float64)
    target = (design @ truth[..., None])[..., 0]
    weight = torch.rand(3, 40, generator=g, dtype=torch.float64)
    solution = weighted_least_squares(design, target, weight, torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(solution, truth)
    residual = torch.tensor([[[[0.5]], [[-2.0]], [[0.0]]]])
    torch.testing.assert_close(irls_weights(residual, "l1"), torch.tensor([[[[1.0]], [[0.25]], [[500.0]]]]))
    torch.testing.assert_close(irls_weights(residual, "l21"), torch.full((1, 3, 1, 1), 0.5 / (4.25 ** 0.5)))


@pytest.mark.parametrize("norm", ["l2", "l1", "l21"])
def test_lighting_and_albedo_are_recovered_from_a_noiseless_uv_target(model, norm):
    truth = sample_scenes(model, 2, SceneConfig(seed=2))
    vertices, albedo = model.from_parameters(truth)
    frame = UVFrame(model.uv, model.triangles, 32)
    normals = lighting_frame_normals(vertices, model.triangles, truth.angles)
    from diffface.lighting import sh_irradiance, sh_shading

    target = frame(sh_shading(albedo, normals, truth.sh))
    mask = frame.mask[None, None].float().expand(2, 1, -1, -1)
    sh = solve_lighting(frame, albedo, normals, target, mask, norm)
    rendered = frame(sh_shading(albedo, normals, sh))
    assert float(texture_norm(rendered, target, mask, "l1").max()) < 2e-3
    beta = solve_albedo(model, frame, sh_irradiance(normals, truth.sh), target, mask, r_beta=1e-9, norm=norm)
    _, fitted_albedo = model(truth.alpha_id, truth.alpha_exp, beta)
    rendered = frame(sh_shading(fitted_albedo, normals, truth.sh))
    assert float(texture_norm(rendered, target, mask, "l1").max()) < 2e-3


def test_fit_texture_lowers_the_energy_and_keeps_samples_independent(model, scene):
    truth, images, landmarks = scene
    start = replace(truth, alpha_id=torch.zeros_like(truth.alpha_id), beta=None, sh=None,
                    angles=truth.angles + 0.03)
    config = TextureFitConfig(rounds=2, steps_per_group=2, uv_size=32)
    result = fit_texture(model, images, landmarks, start, config)
    assert result.history[-1].shape == (2,) and not result.diverged.any()
    # against the energy at the start (0 rounds: mean albedo, exact lighting), not after round 1
    initial = fit_texture(model, images, landmarks, start, replace(config, rounds=0)).energy
    assert (result.energy < 0.9 * initial).all() and (result.history[0] <= initial).all()
    assert (result.history[-1] <= result.history[0] + 1e-6).all()
    assert result.params.sh.shape == (2, 27) and result.params.beta.shape == (2, model.tex_dims)
    single = fit_texture(model, images[1:], landmarks[1:], start.index(slice(1, 2)), config)
    # the same up to float rounding of batched vs single products (a few µm)
    torch.testing.assert_close(single.params.alpha_id, result.params.alpha_id[1:], rtol=0, atol=5e-3)
    torch.testing.assert_close(single.energy, result.energy[1:], rtol=1e-3, atol=1e-5)


def test_persistent_adam_keeps_one_optimizer_per_group_across_rounds(model, scene, monkeypatch):
    truth, images, landmarks = scene
    start = replace(truth, alpha_id=torch.zeros_like(truth.alpha_id), beta=None, sh=None)
    created = []

    class CountingAdam(torch.optim.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(torch.optim, "Adam", CountingAdam)
    config = TextureFitConfig(rounds=3, steps_per_group=2, uv_size=32)
    fresh = fit_texture(model, images, landmarks, start, config)
    assert len(created) == 3 * 3  # pose, identity, expression in each of 3 rounds
    created.clear()
    kept = fit_texture(model, images, landmarks, start, replace(config, persistent_adam=True))
    assert len(created) == 3
    # each optimizer counted every step of its group over all rounds: 3 rounds x 2 steps
    assert all(state["step"] == 6 for adam in created for state in adam.state.values())
    assert not kept.diverged.any() and (kept.history[-1] <= kept.history[0] + 1e-6).all()
    assert not torch.equal(kept.params.alpha_id, fresh.params.alpha_id)


def test_a_diverging_sample_is_reset_without_touching_the_others():
    variables = {"pose": torch.tensor([[0.1, 0.2, 0.3], [float("nan"), 0.0, 0.0]])}
    last_good = {"pose": torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])}
    diverged = torch.zeros(2, dtype=torch.bool)
    _reset_bad_samples(variables, last_good, torch.tensor([True, True]), diverged)
    assert diverged.tolist() == [False, True]
    torch.testing.assert_close(variables["pose"], torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(last_good["pose"], variables["pose"])


def test_bad_input(model, scene):
    truth, images, landmarks = scene
    with pytest.raises(ValueError, match="images"):
        fit_texture(model, images * float("nan"), landmarks, truth)
    with pytest.raises(ValueError, match="landmarks_2d"):
        fit_texture(model, images, landmarks[:, :10], truth)
    with pytest.raises(ValueError, match="norm"):
        TextureFitConfig(norm="l0")
    with pytest.raises(ValueError, match="groups"):
        TextureFitConfig(groups=("pose", "hair"))


def test_missing_lighting_is_solved_before_other_groups_move(model, scene):
    truth, images, landmarks = scene
    start = replace(truth, sh=None)
    solved = {}
    for groups in (("pose",), ("lighting",)):  # pose first: the same exact lighting is solved up front
        config = TextureFitConfig(groups=groups, rounds=1, steps_per_group=0, uv_size=32)
        solved[groups] = fit_texture(model, images, landmarks, start, config).params.sh
    assert torch.isfinite(solved[("pose",)]).all() and solved[("pose",)].abs().sum() > 0
    torch.testing.assert_close(solved[("pose",)], solved[("lighting",)])


def test_zbuffer_visibility_leaves_out_what_the_nose_hides(model, scene):
    """At 60° yaw the z-buffer test drops front-facing vertices hidden behind the nose from the texture term
    (frontal: none), and stage 2 runs with it."""
    from diffface.fitting.texture_fitting import _Stage2Energy

    truth, images, landmarks = scene
    for yaw, hidden_expected in ((0.0, False), (1.05, True)):
        posed = replace(truth, angles=torch.tensor([[0.0, yaw, 0.0]] * 2))
        normals = _Stage2Energy(model, images, landmarks, TextureFitConfig(uv_size=32))(posed)["output"]
        zbuffer = _Stage2Energy(model, images, landmarks, TextureFitConfig(uv_size=32, visibility="zbuffer"))
        depth = zbuffer(posed)["output"]
        hidden = (normals.visible & ~depth.visible).sum(-1)
        assert bool((hidden > 10).all()) if hidden_expected else int(hidden.max()) <= 10
        assert not (depth.visible & ~normals.visible).any()
    result = fit_texture(model, images, landmarks, replace(truth, beta=None, sh=None),
                         TextureFitConfig(rounds=1, steps_per_group=1, uv_size=32, visibility="zbuffer"))
    assert torch.isfinite(result.energy).all() and not result.diverged.any()
    with pytest.raises(ValueError, match="visibility must be one of"):
        TextureFitConfig(visibility="rays")


def test_identity_prior_adds_its_weighted_sum_and_pulls_the_identity_in(model, scene):
    truth, images, landmarks = scene
    frozen = TextureFitConfig(groups=("pose",), rounds=1, steps_per_group=0, uv_size=32)
    plain = fit_texture(model, images, landmarks, truth, frozen)
    weighted = fit_texture(model, images, landmarks, truth, replace(frozen, r_id=0.25))
    expected = 0.25 * (truth.alpha_id / model.id_std).pow(2).sum(-1)
    assert (expected > 1).all()
    torch.testing.assert_close(weighted.energy - plain.energy, expected, rtol=1e-5, atol=1e-6)
    moving = TextureFitConfig(groups=("identity",), rounds=1, steps_per_group=4, uv_size=32)
    free = fit_texture(model, images, landmarks, truth, moving).params.alpha_id
    pulled = fit_texture(model, images, landmarks, truth, replace(moving, r_id=1.0)).params.alpha_id
    assert ((pulled / model.id_std).norm(dim=-1) < (free / model.id_std).norm(dim=-1)).all()
    with pytest.raises(ValueError, match="r_id"):
        TextureFitConfig(r_id=-1.0)


def test_prior_anneal_relaxes_the_shape_priors_geometrically_to_their_values(model, scene):
    truth, images, landmarks = scene
    frozen = TextureFitConfig(groups=("pose",), rounds=3, steps_per_group=0, uv_size=32, r_id=0.25, r_exp=0.5)
    constant = fit_texture(model, images, landmarks, truth, frozen)
    annealed = fit_texture(model, images, landmarks, truth, replace(frozen, prior_anneal=100.0))
    priors = (0.25 * (truth.alpha_id / model.id_std).pow(2).sum(-1)
              + 0.5 * (truth.alpha_exp / model.exp_std).pow(2).sum(-1))
    for history, scale in zip(annealed.history, (100.0, 10.0, 1.0)):  # 100^(2/2), 100^(1/2), 100^0
        torch.testing.assert_close(history - constant.history[0], (scale - 1) * priors, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(annealed.energy, constant.energy)  # the result is reported at the final weights
    with pytest.raises(ValueError, match="prior_anneal"):
        TextureFitConfig(prior_anneal=0.5)
