import math
from dataclasses import replace

import pytest
import torch

from diffface.fitting import LandmarkFitConfig, fit_landmarks, initial_parameters
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.landmark_marching import project_landmarks


def _truth(model, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    a_id, a_exp, _ = model.sample_coefficients(B, generator=g)
    angles = (torch.rand(B, 3, generator=g) - 0.5) * torch.tensor([0.3, 1.0, 0.2])
    translation = torch.stack([torch.randn(B, generator=g) * 5, torch.randn(B, generator=g) * 5,
                               torch.full((B,), 700.0)], -1)
    return FaceParameters(alpha_id=a_id, alpha_exp=a_exp, translation=translation, angles=angles,
                          focal=torch.full((B, 1), 1000.0), principal_point=torch.full((B, 2), 112.0))


def test_recovers_pose_and_reprojects_exactly_without_noise(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    truth = _truth(model, 6)
    target, _ = project_landmarks(model, truth)
    config = LandmarkFitConfig(rounds=8, r_id=0.0, r_exp=0.0)
    fit = fit_landmarks(model, target, (224, 224), config)
    fitted, _ = project_landmarks(model, fit.params)
    rms = (fitted - target).pow(2).sum(-1).mean().sqrt()
    assert rms < 0.5, rms
    assert (fit.params.angles[:, 1] - truth.angles[:, 1]).abs().max() < math.radians(5)
    # against the energy at the start (0 rounds: the initial parameters), not after round 1
    start = fit_landmarks(model, target, (224, 224), replace(config, rounds=0)).energy
    assert (fit.energy < 1e-2 * start).all() and (fit.history[0] <= start).all()
    assert all((later <= earlier).all() for earlier, later in zip(fit.history, fit.history[1:]))


def test_initial_parameters_centre_the_face(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    truth = _truth(model, 3)
    truth.angles.zero_()
    truth.alpha_id.zero_()
    truth.alpha_exp.zero_()
    target, _ = project_landmarks(model, truth)
    init = initial_parameters(model, target, (224, 224), 1000.0)
    assert torch.allclose(init.translation[:, 2], truth.translation[:, 2], rtol=0.1)
    guess, _ = project_landmarks(model, init)
    # perspective makes the centroid of projections differ slightly from the projected centroid
    assert (guess.mean(1) - target.mean(1)).norm(dim=-1).max() < 6.0


def test_nan_sample_is_rejected_with_a_clear_error(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    target = torch.full((2, 68, 2), float("nan"))
    with pytest.raises(ValueError, match="no usable landmark"):
        fit_landmarks(model, target, (224, 224))
    with pytest.raises(ValueError, match="landmarks_2d"):
        fit_landmarks(model, torch.zeros(2, 67, 2), (224, 224))


def test_missing_landmarks_are_ignored(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    truth = _truth(model, 2, seed=3)
    target, _ = project_landmarks(model, truth)
    corrupted = target.clone()
    corrupted[:, :10] = float("nan")
    fit = fit_landmarks(model, corrupted, (224, 224), LandmarkFitConfig(rounds=6))
    fitted, _ = project_landmarks(model, fit.params)
    assert torch.isfinite(fit.energy).all()
    assert (fitted[:, 10:] - target[:, 10:]).pow(2).sum(-1).mean().sqrt() < 1.0


def test_builtin_model_fit_beats_mean_shape_with_noisy_landmarks():
    from diffface.morphable_model import load_morphable_model
    from diffface.app.synth import SceneConfig, noisy_landmarks, sample_scenes

    model = load_morphable_model("builtin")
    truth = sample_scenes(model, 8, SceneConfig(seed=5))
    true_vertices = model.shape(truth.alpha_id, truth.alpha_exp)
    clean, _ = project_landmarks(model, truth, true_vertices)
    fit = fit_landmarks(model, noisy_landmarks(clean, 2.0, seed=5), (224, 224), LandmarkFitConfig(rounds=5))
    fitted = model.shape(fit.params.alpha_id, fit.params.alpha_exp)
    fit_error = (fitted - true_vertices).norm(dim=-1).mean()
    mean_error = (model.mean_shape - true_vertices).norm(dim=-1).mean()
    assert fit_error < 0.85 * mean_error, (fit_error, mean_error)
    assert (fit.params.angles[:, 1] - truth.angles[:, 1]).abs().mean() < math.radians(3)
    reprojected, _ = project_landmarks(model, fit.params, fitted)
    assert (reprojected - clean).pow(2).sum(-1).mean().sqrt() < 3.0


def test_one_bad_sample_does_not_spoil_the_others(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    truth = _truth(model, 3, seed=7)
    target, _ = project_landmarks(model, truth)
    target = target.double()
    target[2] = target[2] * 1e4  # a wildly wrong detection
    init = initial_parameters(model, target, (224, 224), 1000.0)
    init.alpha_id[1] = float("nan")  # a diverged starting point
    config = LandmarkFitConfig(rounds=4)
    batch = fit_landmarks(model, target, (224, 224), config, init=init)
    alone = fit_landmarks(model, target[:1], (224, 224), config, init=init.index(slice(0, 1)))
    assert torch.isfinite(batch.energy[0]) and torch.isfinite(batch.params.angles[0]).all()
    assert torch.isnan(batch.energy[1])
    for name in ("alpha_id", "alpha_exp", "angles", "translation"):
        assert torch.allclose(getattr(batch.params, name)[:1], getattr(alone.params, name), atol=1e-6), name
    assert torch.equal(batch.landmark_indices[:1], alone.landmark_indices)


def test_marched_landmarks_match_the_full_mesh_reference():
    from diffface.camera import perspective_project
    from diffface.landmark_marching import march_contour_landmarks
    from diffface.morphable_model import load_morphable_model
    from diffface.app.synth import SceneConfig, noisy_landmarks, sample_scenes

    model = load_morphable_model("builtin")
    truth = sample_scenes(model, 6, SceneConfig(seed=2))
    clean, _ = project_landmarks(model, truth)
    fit = fit_landmarks(model, noisy_landmarks(clean, 1.0, seed=2), (224, 224), LandmarkFitConfig(rounds=2))
    p = fit.params
    uv, _ = perspective_project(model.shape(p.alpha_id, p.alpha_exp), p.angles, p.translation, p.focal,
                                p.principal_point)
    reference = march_contour_landmarks(uv, p.angles, model.landmark_indices.clamp_min(0), model.contour_landmarks,
                                        model.contour_lines)
    assert (fit.landmark_indices == reference).float().mean() > 0.99
