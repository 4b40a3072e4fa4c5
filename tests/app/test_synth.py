"""Detector-like landmark errors of the synthetic benchmark: each structured term does what it says, and
without them the observed landmarks are the plain noisy ones."""

from dataclasses import replace

import pytest
import torch

from diffface.app.synth import SceneConfig, detector_like_landmarks, interocular_error, noisy_landmarks


def _landmarks(batch: int = 64) -> torch.Tensor:
    """Faces of 68 points on an ellipse-ish layout, jaw points 0-16 along a U. Shape: (B, 68, 2)."""
    t = torch.linspace(-1.2, 1.2, 17)
    jaw = torch.stack([60 * torch.sin(t), 60 * torch.cos(t)], -1) + 100
    rest = torch.rand(51, 2, generator=torch.Generator().manual_seed(0)) * 80 + 60
    return torch.cat([jaw, rest])[None].repeat(batch, 1, 1).double()


def test_without_structured_terms_it_is_the_plain_noise():
    truth = _landmarks()
    torch.testing.assert_close(detector_like_landmarks(truth, SceneConfig(landmark_noise_px=2.0), seed=7),
                               noisy_landmarks(truth, 2.0, seed=7), rtol=0, atol=0)


def test_offset_is_one_shift_per_face_with_its_sigma():
    truth = _landmarks(2000)
    shift = detector_like_landmarks(truth, SceneConfig(landmark_noise_px=0.0, landmark_offset_px=3.0)) - truth
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift))  # the same vector for every point
    assert shift[:, 0].std(0).tolist() == pytest.approx([3.0, 3.0], rel=0.06)


def test_scale_is_about_the_centroid_and_contour_points_slide_along_the_jaw():
    truth = _landmarks(500)
    centroid = truth.mean(1, keepdim=True)
    scaled = detector_like_landmarks(truth, SceneConfig(landmark_noise_px=0.0, landmark_scale=0.05))
    ratio = (scaled - centroid) / (truth - centroid)
    torch.testing.assert_close(ratio, ratio[:, :1, :1].expand_as(ratio))  # one factor per face, x and y alike
    assert float(ratio[:, 0, 0].std()) == pytest.approx(0.05, rel=0.15)
    slid = detector_like_landmarks(truth, SceneConfig(landmark_noise_px=0.0, contour_slide_px=4.0))
    assert torch.equal(slid[:, 17:], truth[:, 17:])
    move, tangent = (slid - truth)[:, 1:16], truth[:, 2:17] - truth[:, 0:15]
    cross = move[..., 0] * tangent[..., 1] - move[..., 1] * tangent[..., 0]
    assert float(cross.abs().max()) < 1e-9 * float(tangent.norm(dim=-1).max())  # along the jaw, not across
    assert float(move.norm(dim=-1).pow(2).mean().sqrt()) == pytest.approx(4.0, rel=0.1)


def test_interocular_error_is_the_mean_error_over_the_eye_corner_distance():
    truth = _landmarks(3)
    interocular = (truth[:, 36] - truth[:, 45]).norm(dim=-1)
    shifted = truth + torch.stack([0.1 * interocular, torch.zeros(3, dtype=truth.dtype)], -1)[:, None]
    torch.testing.assert_close(interocular_error(shifted, truth), torch.full((3,), 0.1, dtype=truth.dtype))
    assert replace(SceneConfig(), landmark_scale=0.02).landmark_offset_px == 0.0  # off unless asked for
