"""Automatic fit-quality flags: each measure against a plain reference, thresholds, and the sortable score."""

import math

import numpy as np
import pytest
import torch

from diffface.app.dataset.quality import FLAGS, QualityConfig, fit_quality, landmark_rms, max_abs_sigma


def test_landmark_rms_against_a_loop_reference():
    rng = np.random.default_rng(0)
    fitted, observed = rng.normal(size=(3, 68, 2)) * 5, rng.normal(size=(3, 68, 2)) * 5
    observed[1, :10] = np.nan
    observed[2] = np.nan
    got = landmark_rms(torch.from_numpy(fitted), torch.from_numpy(observed)).numpy()
    for b in range(2):
        pairs = [(f, o) for f, o in zip(fitted[b], observed[b]) if np.isfinite(o).all()]
        reference = math.sqrt(sum(((f - o) ** 2).sum() for f, o in pairs) / len(pairs))
        assert got[b] == pytest.approx(reference, rel=1e-12)
    assert np.isnan(got[2])


def test_max_abs_sigma_in_units_of_each_mode():
    alpha_id = torch.tensor([[2.0, -9.0], [0.5, 0.5]])
    alpha_exp = torch.tensor([[1.0], [-4.0]])
    got = max_abs_sigma(alpha_id, alpha_exp, torch.tensor([1.0, 3.0]), torch.tensor([2.0]))
    assert got.tolist() == [3.0, 2.0]


def _quality(rms_px=1.0, sigma=1.0, yaw_deg=10.0, pitch_deg=5.0, residual=0.05, size=100):
    observed = torch.zeros(1, 68, 2)
    fitted = observed + torch.tensor([rms_px, 0.0])
    angles = torch.tensor([[math.radians(pitch_deg), math.radians(yaw_deg), 0.0]])
    return fit_quality(fitted, observed, torch.tensor([[sigma * 2.0]]), torch.zeros(1, 1), angles,
                       torch.tensor([2.0]), torch.ones(1), size, torch.tensor([residual]), QualityConfig())


@pytest.mark.parametrize("change, flag", [({"rms_px": 3.5}, "landmark_residual"), ({"residual": 0.2}, "texture_residual"),
                                          ({"sigma": -3.2}, "implausible_params"), ({"yaw_deg": -70}, "extreme_pose"),
                                          ({"pitch_deg": 35}, "extreme_pose")])
def test_each_flag_fires_beyond_its_threshold_only(change, flag):
    (good,), (good_flags,) = _quality()
    assert good_flags == [] and good["score"] < 1
    (bad,), (bad_flags,) = _quality(**change)
    assert bad_flags == [flag] and bad["score"] > 1 and flag in FLAGS
    assert good["landmark_rms_px"] == pytest.approx(1.0) and good["abs_yaw_deg"] == pytest.approx(10.0)


def test_score_is_the_worst_ratio_and_unknowns_are_none():
    (q,), _ = _quality(rms_px=1.5, sigma=2.7, yaw_deg=30, residual=float("nan"))
    assert q["texture_residual"] is None
    assert q["score"] == pytest.approx(max(1.5 / 3.0, 2.7 / 3.0, 30 / 60, 5 / 30))
    with pytest.raises(ValueError, match="max_abs_sigma"):
        QualityConfig(max_abs_sigma=0).validate()
