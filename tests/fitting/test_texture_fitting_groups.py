"""Stage 2 over subjects (fit_texture with groups=, diffface.fitting.frame_ties): shared identity and albedo, the
albedo prior once per subject, smoothness, and the untied path unchanged. Tiny: 2 subjects × 3 frames at 64 px."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffface.app.synth import SceneConfig, random_backgrounds, sample_scenes
from diffface.fitting.frame_groups import FrameGroups
from diffface.fitting.frame_ties import FrameTies
from diffface.fitting.sequence_fitting import SequenceFitConfig
from diffface.fitting.texture_fitting import TextureFitConfig, _reset_bad_samples, fit_texture
from diffface.landmark_marching import project_landmarks
from diffface.morphable_model import load_morphable_model
from diffface.renderers import FaceRenderer

SUBJECTS, FRAMES, SIZE = 2, 3, 64
CONFIG = TextureFitConfig(rounds=1, steps_per_group=2, uv_size=32)
LABELS = [s for s in range(SUBJECTS) for _ in range(FRAMES)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="module")
def model64():
    return load_morphable_model("builtin").to(torch.float64)


def as_float64(scene):
    """The scene in float64: the energy checks subtract terms of ~100 to see one of ~1e-4."""
    truth, images, landmarks, start = scene
    return images.double(), landmarks.double(), start.map(lambda t: t.double())


@pytest.fixture(scope="module")
def scene(model):
    """Two subjects (identity, albedo, light, camera) turning their heads over three frames."""
    subjects = sample_scenes(model, SUBJECTS, SceneConfig(seed=5, image_size=SIZE, focal_px=1000.0 * SIZE / 224,
                                                          yaw_deg=20.0))
    truth = subjects.index(torch.tensor(LABELS))
    yaw = torch.tensor([-0.2, 0.0, 0.2]).repeat(SUBJECTS)
    truth = replace(truth, angles=truth.angles + torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], -1))
    with torch.no_grad():
        images = FaceRenderer(model, SIZE, per_pixel=True)(truth, random_backgrounds(len(LABELS), SIZE, seed=5)).images
    landmarks, _ = project_landmarks(model, truth)
    # stage 1's kind of start: no identity, no appearance, the pose a little off
    start = replace(truth, alpha_id=torch.zeros_like(truth.alpha_id), beta=None, sh=None, angles=truth.angles + 0.03)
    return truth, images.clamp(0, 1).permute(0, 3, 1, 2).contiguous(), landmarks, start


def _other_terms(result, config=CONFIG):
    return result.texture + config.c_lands * result.landmarks + config.r_exp * result.exp_prior


def test_shared_identity_and_albedo_are_one_per_subject(model64, scene):
    model = model64
    images, landmarks, start = as_float64(scene)
    groups = FrameGroups.from_labels(LABELS, True)
    result = fit_texture(model, images, landmarks, start, CONFIG, groups=groups, sequence=SequenceFitConfig())
    for name in ("alpha_id", "beta"):
        value = getattr(result.params, name).view(SUBJECTS, FRAMES, -1)
        assert (value == value[:, :1]).all(), name  # the same vector on every frame of a subject
        assert (value[0, 0] - value[1, 0]).abs().max() > 1e-3, name
    # per frame: pose, expression and light stay each frame's own
    assert not (result.params.angles[:FRAMES] == result.params.angles[0]).all()
    assert not (result.params.sh[:FRAMES] == result.params.sh[0]).all()
    assert torch.isfinite(result.energy).all() and not result.diverged.any()
    # the albedo prior counts once per subject: each of its 3 frames carries a third (smooth=False: nothing else)
    torch.testing.assert_close(result.energy - _other_terms(result), CONFIG.r_beta * result.albedo_prior / FRAMES,
                               rtol=1e-9, atol=1e-12)
    # the start's energy (0 rounds: mean albedo, exact lighting) is higher
    initial = fit_texture(model, images, landmarks, start, replace(CONFIG, rounds=0), groups=groups,
                          sequence=SequenceFitConfig()).energy
    assert (groups.sum_per_subject(result.energy) < groups.sum_per_subject(initial)).all()


def test_without_sharing_the_frames_keep_their_own_identity_and_albedo(model, scene):
    truth, images, landmarks, start = scene
    groups = FrameGroups.from_labels(LABELS, True)
    result = fit_texture(model, images, landmarks, start, CONFIG, groups=groups,
                         sequence=SequenceFitConfig(share_identity=False))
    plain = fit_texture(model, images, landmarks, start, CONFIG)
    for name in ("alpha_id", "beta", "angles", "translation", "alpha_exp", "sh"):
        assert torch.equal(getattr(result.params, name), getattr(plain.params, name)), name
    assert torch.equal(result.energy, plain.energy)


def test_independent_groups_are_the_untied_fit_bit_for_bit(model, scene):
    """Every frame its own subject (shared rows = frames, prior share 1, no difference rows): the tied code path
    must give exactly what fit_texture gives without groups (which matched the code before groups existed, bit for
    bit, when this test was written)."""
    truth, images, landmarks, start = scene
    config = replace(CONFIG, norm="l1", visibility="zbuffer")
    plain = fit_texture(model, images, landmarks, start, config)
    tied = fit_texture(model, images, landmarks, start, config, groups=FrameGroups.independent(len(LABELS)),
                       sequence=SequenceFitConfig(smooth=True))
    for name in ("alpha_id", "beta", "angles", "translation", "alpha_exp", "sh"):
        assert torch.equal(getattr(tied.params, name), getattr(plain.params, name)), name
    for name in ("energy", "texture", "landmarks", "albedo_prior", "exp_prior", "diverged"):
        assert torch.equal(getattr(tied, name), getattr(plain, name)), name
    assert all(torch.equal(a, b) for a, b in zip(tied.history, plain.history))
    # the untied energy is the module's sum, in its order, as before groups (float32: the order shows)
    config_sum = (plain.texture + config.c_lands * plain.landmarks + config.r_beta * plain.albedo_prior
                  + config.r_exp * plain.exp_prior)
    assert torch.equal(plain.energy, config_sum)


def test_smoothness_is_part_of_the_energy_on_videos_only(model64, scene):
    model = model64
    images, landmarks, start = as_float64(scene)
    sequence = SequenceFitConfig(smooth=True, smooth_order=1)
    for ordered in (True, False):
        groups = FrameGroups.from_labels(LABELS, ordered)
        result = fit_texture(model, images, landmarks, start, CONFIG, groups=groups, sequence=sequence)
        ties = FrameTies(groups, sequence, model, CONFIG.c_lands, torch.float64, images.device)
        smoothness = ties.smoothness(result.params.angles, result.params.translation,
                                     result.params.alpha_exp / model.exp_std)
        # the first-difference rows charge their first frame: the last frame of each subject carries none
        assert (smoothness.view(SUBJECTS, FRAMES)[:, :-1] > 0).all() == ordered
        assert (smoothness.view(SUBJECTS, FRAMES)[:, -1] == 0).all()
        expected = _other_terms(result) + CONFIG.r_beta * result.albedo_prior / FRAMES + smoothness
        torch.testing.assert_close(result.energy, expected, rtol=1e-12, atol=1e-12)


def test_a_subject_does_not_depend_on_the_other_subject(model, scene):
    truth, images, landmarks, start = scene
    groups = FrameGroups.from_labels(LABELS, True)
    sequence = SequenceFitConfig(smooth=True)
    together = fit_texture(model, images, landmarks, start, CONFIG, groups=groups, sequence=sequence)
    part = slice(FRAMES, 2 * FRAMES)
    alone = fit_texture(model, images[part], landmarks[part], start.index(part), CONFIG,
                        groups=FrameGroups.from_labels([0] * FRAMES, True), sequence=sequence)
    # float32 rounding of batched against single products
    torch.testing.assert_close(alone.params.alpha_id, together.params.alpha_id[part], rtol=0, atol=5e-3)
    torch.testing.assert_close(alone.params.beta, together.params.beta[part], rtol=0, atol=5e-3)
    torch.testing.assert_close(alone.energy, together.energy[part], rtol=1e-3, atol=1e-5)


def test_bad_images_and_missing_landmarks_as_without_groups(model, scene):
    truth, images, landmarks, start = scene
    groups = FrameGroups.from_labels(LABELS, True)
    nan_images = images.clone()
    nan_images[1] = float("nan")
    for kwargs in ({}, {"groups": groups, "sequence": SequenceFitConfig(smooth=True)}):
        with pytest.raises(ValueError, match="images: contain NaN"):
            fit_texture(model, nan_images, landmarks, start, CONFIG, **kwargs)
    # a frame whose landmarks are all missing: fitted from its texture alone, with or without groups
    missing = landmarks.clone()
    missing[1] = float("nan")
    for kwargs in ({}, {"groups": groups, "sequence": SequenceFitConfig(smooth=True)}):
        result = fit_texture(model, images, missing, start, CONFIG, **kwargs)
        assert torch.isfinite(result.energy).all() and not result.diverged.any()
        assert result.landmarks[1] == 0 and (result.landmarks[[0, 2]] > 0).all()
        assert torch.isfinite(result.params.alpha_id).all() and torch.isfinite(result.params.beta).all()


def test_a_diverging_frame_resets_its_subjects_shared_rows_only(model):
    groups = FrameGroups.from_labels([0, 0, 1, 1], False)
    ties = FrameTies(groups, SequenceFitConfig(), model, 10.0, torch.float32, torch.device("cpu"))
    variables = {"identity": torch.tensor([[1.0, 1.0], [2.0, 2.0]]),
                 "pose": torch.tensor([[0.1] * 3, [float("nan"), 0.0, 0.0], [0.3] * 3, [0.4] * 3])}
    last_good = {"identity": torch.zeros(2, 2), "pose": torch.full((4, 3), -1.0)}
    diverged = torch.zeros(4, dtype=torch.bool)
    _reset_bad_samples(variables, last_good, torch.ones(4, dtype=torch.bool), diverged, ties)
    assert diverged.tolist() == [False, True, False, False]
    # frame 1's pose goes back; so does subject 0's identity (one of its frames is bad); subject 1 keeps its own
    torch.testing.assert_close(variables["pose"], torch.tensor([[0.1] * 3, [-1.0] * 3, [0.3] * 3, [0.4] * 3]))
    torch.testing.assert_close(variables["identity"], torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    torch.testing.assert_close(last_good["identity"], variables["identity"])
