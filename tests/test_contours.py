import json

import numpy as np
import pytest

from diffface.contours import IBUG_CONTOUR, IBUG_LEFT_CONTOUR, IBUG_RIGHT_CONTOUR, build_contour_lines, \
    frontal_contour_vertices, vertex_spacing
from diffface.uv import head_axis


def half_cylinder(columns=31, rows=21, radius=70.0, azimuth_deg=(-90, 90)):
    """A face-like half cylinder: column j at azimuth -90°..90° (towards +x), row i at height -60..60 mm."""
    azimuth = np.deg2rad(np.linspace(*azimuth_deg, columns))
    theta, y = np.meshgrid(azimuth, np.linspace(-60, 60, rows))
    return np.stack([radius * np.sin(theta), y, radius * np.cos(theta)], -1).reshape(-1, 3), columns


def test_lines_follow_the_landmark_plane_outwards():
    vertices, columns = half_cylinder()
    marks = np.full(68, -1)
    marks[3] = 5 * columns + 2  # row 5, right side
    marks[13] = 12 * columns + columns - 4  # row 12, left side
    lines = build_contour_lines(vertices, marks, [3, 13])
    assert lines.shape[0] == 2
    center_x, center_z = head_axis(vertices)
    for landmark, line, side in ((3, lines[0], -1), (13, lines[1], 1)):
        line = line[line >= 0]
        assert marks[landmark] in line
        assert np.all(vertices[line, 1] == vertices[marks[landmark], 1])  # the exact row wins every step
        assert np.all(side * (vertices[line, 0] - center_x) >= -1e-9)
        azimuth = np.arctan2(side * (vertices[line, 0] - center_x), vertices[line, 2] - center_z)
        assert np.all(np.diff(azimuth) > 0) and abs(vertices[line[0], 0]) < 1e-9  # from the centre outwards
        assert line.size == columns // 2 + 1


def test_padding_limits_and_errors():
    vertices, columns = half_cylinder(azimuth_deg=(-90, 45))  # the left side is shorter
    marks = np.full(68, -1)
    marks[0], marks[16] = 3 * columns, 3 * columns + columns - 1
    lines = build_contour_lines(vertices, marks, [0, 16])
    assert lines.dtype == np.int64 and (lines[1] == -1).any() and (lines[:, 0] >= 0).all()
    limited = build_contour_lines(vertices, marks, [16], max_azimuth_deg=30)
    kept = limited[0][limited[0] >= 0]
    assert marks[16] in kept and kept.size < (lines[1] >= 0).sum()
    with pytest.raises(ValueError, match="contour landmark 5 .* has no vertex"):
        build_contour_lines(vertices, marks, [5])
    assert build_contour_lines(vertices, marks, []).shape == (0, 0)
    assert vertex_spacing(vertices) == pytest.approx(np.deg2rad(135 / 30) * 70, rel=0.01)


def test_frontal_defaults_are_spaced_along_the_outline():
    vertices = np.stack([np.full(21, -60.0), np.linspace(40, -60, 21), np.zeros(21)], 1)
    outline = np.arange(21)
    picks = frontal_contour_vertices(vertices, outline, top_y=20.0, count=8)
    assert vertices[picks[0], 1] == 20 and np.all(np.diff(vertices[picks, 1]) < 0)
    np.testing.assert_allclose(np.diff(vertices[picks, 1]), -10)  # 80 mm / 8 steps
    np.testing.assert_array_equal(frontal_contour_vertices(vertices, outline[::-1], 20.0, 8), picks)
    assert frontal_contour_vertices(vertices, outline, None, 4).tolist() == [0, 5, 10, 15]


def test_real_surrey_contours(shared_data):
    sfm = np.load(shared_data / "sfm" / "sfm_3448.npz")
    mean = sfm["mean"].reshape(-1, 3)
    outlines = json.loads((shared_data / "sfm" / "sfm_model_contours.json").read_text())["model_contour"]
    top = mean[[177, 610], 1].mean()  # the outer eye corners
    marks = np.full(68, -1)
    marks[list(IBUG_RIGHT_CONTOUR)] = frontal_contour_vertices(mean, outlines["right_contour"], top)
    marks[list(IBUG_LEFT_CONTOUR[::-1])] = frontal_contour_vertices(mean, outlines["left_contour"], top)
    assert np.all(mean[marks[list(IBUG_RIGHT_CONTOUR)], 0] < 0) and np.all(mean[marks[list(IBUG_LEFT_CONTOUR)], 0] > 0)
    lines = build_contour_lines(mean, marks, IBUG_CONTOUR)
    assert lines.shape[0] == 16 and (lines >= 0).sum(1).min() >= 10
    for landmark, line in zip(IBUG_CONTOUR, lines):
        line = line[line >= 0]
        assert marks[landmark] in line
        assert abs(mean[line[-1], 0]) > abs(mean[line[0], 0])
        assert np.abs(mean[line, 1] - mean[marks[landmark], 1]).max() <= vertex_spacing(mean) + 1e-6
