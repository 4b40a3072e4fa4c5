"""Input limits: images and landmarks that cannot be a face in that image are refused with the reason."""

import numpy as np
import pytest

from diffface.landmarks import InputLimits, check_face_input, check_image_size


def _face(center=(100.0, 120.0), size=80.0, seed=0):
    """68 points spread over a ``size``-pixel box around ``center``. Shape: -> (68, 2)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.5, 0.5, (68, 2)) * size + np.asarray(center)
    points[:2] = np.asarray(center) + [[-size / 2, -size / 2], [size / 2, size / 2]]  # the box's corners
    return points


def test_a_plausible_face_passes_even_cut_by_the_frame():
    check_face_input((240, 200), _face(), "ok.png")
    cut = _face(center=(-40.0, 120.0), size=80.0)  # the face cut by the left edge, a quarter beyond the margin
    margin = 0.25 * 240
    assert 0.1 < (cut[:, 0] < -0.5 - margin).mean() < 0.5
    check_face_input((240, 200), cut, "cut.png")
    partly = _face(center=(100.0, 120.0))
    partly[:20] = np.nan  # missing landmarks are ignored
    check_face_input((240, 200), partly, "partly.png")


def test_impossible_inputs_name_the_image_and_the_reason():
    with pytest.raises(ValueError, match=r"one.png: image too small to hold a face \(1x1 pixels; at least 32"):
        check_face_input((1, 1), _face(), "one.png")
    with pytest.raises(ValueError, match=r"far.png: 68 of 68 landmarks lie outside the 200x240 image"):
        check_face_input((240, 200), _face() + 1e6, "far.png")
    mostly = _face()
    mostly[:40] += 5000.0
    with pytest.raises(ValueError, match=r"mostly.png: 40 of 68 landmarks lie outside"):
        check_face_input((240, 200), mostly, "mostly.png")
    with pytest.raises(ValueError, match=r"speck.png: face too small \(3.0 px across its landmarks; at least 16"):
        check_face_input((240, 200), _face(size=3.0), "speck.png")
    with pytest.raises(ValueError, match="nan.png: no finite landmark"):
        check_face_input((240, 200), np.full((68, 2), np.nan), "nan.png")


def test_thresholds_are_settings():
    loose = InputLimits(min_image_side=1, min_face_px=2.0, max_outside_fraction=1.0)
    check_face_input((1, 1), _face(center=(0.0, 0.0), size=3.0), "one.png", loose)
    strict = InputLimits(min_image_side=300)
    with pytest.raises(ValueError, match="at least 300"):
        check_image_size((240, 400), "wide.png", strict)
    check_image_size((300, 400), "big.png", strict)
    for bad in [{"max_image_pixels": -1}, {"min_image_side": 0}, {"max_outside_fraction": 1.5},
                {"outside_margin": -0.1}, {"min_face_px": -1}]:
        with pytest.raises(ValueError, match=f"limits.{next(iter(bad))} is out of range"):
            InputLimits(**bad)
