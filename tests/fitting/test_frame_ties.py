"""diffface.fitting.frame_ties: the low-pass filter stage 2's smoothed steps go through, and how FrameTies uses it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffface.app.synth import SceneConfig, random_backgrounds, sample_scenes
from diffface.fitting.frame_groups import FrameGroups
from diffface.fitting.frame_ties import SMOOTHED_VARIABLES, FrameTies, low_pass_filter
from diffface.fitting.sequence_fitting import SequenceFitConfig
from diffface.fitting.texture_fitting import TextureFitConfig, fit_texture
from diffface.landmark_marching import project_landmarks
from diffface.morphable_model import load_morphable_model
from diffface.renderers import FaceRenderer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


@pytest.mark.parametrize("order", [1, 2])
def test_filter_inverts_identity_plus_mu_gram_and_stays_within_subjects(order):
    groups = FrameGroups.from_labels([0] * 7 + [1] * 5 + [2] * 4, [True, True, False])
    operator = groups.difference(order)
    dense = operator.apply_transpose(operator.apply(torch.eye(16, dtype=torch.float64)))
    filt = low_pass_filter(operator, 10.0)
    torch.testing.assert_close(filt @ (torch.eye(16, dtype=torch.float64) + 10.0 * dense),
                               torch.eye(16, dtype=torch.float64))
    torch.testing.assert_close(filt, filt.T)
    # nothing crosses subjects; the unordered photo set is not filtered at all
    same = groups.subject[:, None] == groups.subject[None, :]
    assert (filt[~same] == 0).all()
    torch.testing.assert_close(filt[12:, 12:], torch.eye(4, dtype=torch.float64))


def test_filter_passes_offsets_and_trends_and_damps_frame_to_frame_oscillation():
    groups = FrameGroups.from_labels([0] * 20, True)
    operator = groups.difference(2)
    filt = low_pass_filter(operator, 10.0)
    t = torch.arange(20, dtype=torch.float64)[:, None]
    for slow in (torch.ones_like(t), 3.0 * t - 7.0):  # what second differences do not see
        torch.testing.assert_close(filt @ slow, slow)
    alternating = (-1.0) ** t
    # what is left of an oscillation is smooth: its accelerations are a few percent of the oscillation's
    # ((I + μ·DᵀD) scales a pure oscillation by 1 + 16μ = 161 away from the ends)
    assert operator.apply(filt @ alternating).norm() < 0.05 * operator.apply(alternating).norm()


def test_filtered_variables_start_at_zero_steps_and_gather_to_base_plus_filtered_step(model):
    groups = FrameGroups.from_labels([0] * 5, True)
    ties = FrameTies(groups, SequenceFitConfig(smooth=True, stage2_step_filter=4.0), model, 10.0, torch.float64,
                     torch.device("cpu"))
    value = torch.randn(5, 3, dtype=torch.float64)
    for name in ("pose", "identity", "lighting"):
        start = ties.initial(name, value)
        if name in SMOOTHED_VARIABLES:
            assert ties.filtered(name) and (start == 0).all()
            torch.testing.assert_close(ties.gather(name, start), value)
            step = torch.randn(5, 3, dtype=torch.float64)
            torch.testing.assert_close(ties.gather(name, step), value + ties.filter @ step)
        else:
            assert not ties.filtered(name)
    # no filter without smoothing, with a strength of 0, or for photo sets (no order)
    for sequence, ordered in ((SequenceFitConfig(smooth=False), True),
                              (SequenceFitConfig(smooth=True, stage2_step_filter=0.0), True),
                              (SequenceFitConfig(smooth=True), False)):
        ties = FrameTies(FrameGroups.from_labels([0] * 5, ordered), sequence, model, 10.0, torch.float64,
                         torch.device("cpu"))
        assert not ties.filtered("pose") and ties.initial("pose", value) is value


FRAMES, SIZE = 8, 48


@pytest.fixture(scope="module")
def video(model):
    """One subject turning its head over 8 frames at 48 px; the start's translation jittered by 3 mm per frame."""
    scenes = sample_scenes(model, 1, SceneConfig(seed=3, image_size=SIZE, focal_px=1000.0 * SIZE / 224))
    truth = scenes.index(torch.zeros(FRAMES, dtype=torch.long))
    yaw = torch.linspace(-0.3, 0.3, FRAMES)
    truth = replace(truth, angles=truth.angles + torch.stack([torch.zeros_like(yaw), yaw, torch.zeros_like(yaw)], -1))
    with torch.no_grad():
        images = FaceRenderer(model, SIZE, per_pixel=True)(truth, random_backgrounds(FRAMES, SIZE, seed=3)).images
    landmarks, _ = project_landmarks(model, truth)
    noise = torch.Generator().manual_seed(0)
    start = replace(truth, translation=truth.translation + 3.0 * torch.randn(FRAMES, 3, generator=noise))
    return images.clamp(0, 1).permute(0, 3, 1, 2).contiguous(), landmarks, start


def test_stage2_steps_move_a_smoothed_video_smoothly_only_through_the_filter(model, video):
    """Adam's first step moves every frame by about its learning rate in its own gradient's sign; through the filter
    the same step changes the sequence smoothly (little acceleration for the displacement it makes)."""
    images, landmarks, start = video
    groups = FrameGroups.from_labels([0] * FRAMES, True)
    operator = groups.difference(2)
    config = TextureFitConfig(rounds=1, steps_per_group=1, groups=("pose",), uv_size=32)
    roughness = {}
    for strength in (0.0, 10.0):
        result = fit_texture(model, images, landmarks, start, config, groups=groups,
                             sequence=SequenceFitConfig(smooth=True, stage2_step_filter=strength))
        step = result.params.translation - start.translation
        assert step.abs().max() > 0.1  # it moved (learning rate 1 mm)
        roughness[strength] = float(operator.apply(step).norm() / step.norm())
    assert roughness[10.0] < 0.2 * roughness[0.0], roughness


def test_a_shared_identity_takes_its_own_learning_rate(model, video):
    images, landmarks, start = video
    groups = FrameGroups.from_labels([0] * FRAMES, True)
    config = TextureFitConfig(rounds=1, steps_per_group=1, groups=("lighting", "identity"), uv_size=32)
    for share, rate, expected in ((True, 0.1, 0.1), (True, None, 0.02), (False, 0.1, 0.02)):
        sequence = SequenceFitConfig(share_identity=share, stage2_identity_learning_rate=rate, stage2_rounds=None)
        ties = FrameTies(groups, sequence, model, 10.0, torch.float32, torch.device("cpu"))
        assert ties.learning_rate("identity", 0.02) == expected and ties.learning_rate("expression", 0.02) == 0.02
        result = fit_texture(model, images, landmarks, start, config, groups=groups, sequence=sequence)
        # Adam's first step moves every coordinate by its learning rate (σ units)
        step = (result.params.alpha_id - start.alpha_id) / model.id_std
        torch.testing.assert_close(step.abs().max(), torch.tensor(expected), rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match="stage2_identity_learning_rate"):
        SequenceFitConfig(stage2_identity_learning_rate=0.0)


def test_a_shared_identity_fit_takes_its_own_rounds(model, video):
    images, landmarks, start = video
    groups = FrameGroups.from_labels([0] * FRAMES, True)
    config = TextureFitConfig(rounds=1, steps_per_group=1, groups=("lighting",), uv_size=32)
    for share, rounds, expected in ((True, 2, 2), (True, None, 1), (False, 2, 1)):
        sequence = SequenceFitConfig(share_identity=share, stage2_rounds=rounds)
        result = fit_texture(model, images, landmarks, start, config, groups=groups, sequence=sequence)
        assert len(result.history) == expected
    with pytest.raises(ValueError, match="stage2_rounds"):
        SequenceFitConfig(stage2_rounds=0)


def test_subjects_of_one_frame_keep_the_image_settings(model):
    sequence = SequenceFitConfig(stage2_identity_learning_rate=0.1, stage2_rounds=6)
    alone = FrameTies(FrameGroups.independent(4), sequence, model, 10.0, torch.float32, torch.device("cpu"))
    assert alone.learning_rate("identity", 0.02) == 0.02 and alone.rounds(3) == 3
    pooled = FrameTies(FrameGroups.from_labels([0, 0, 1], False), sequence, model, 10.0, torch.float32,
                       torch.device("cpu"))
    assert pooled.learning_rate("identity", 0.02) == 0.1 and pooled.rounds(3) == 6
