"""Contour marching picks the line vertex furthest out along the image direction of the model's +x axis."""

from __future__ import annotations

import math

import torch

from diffface.camera import euler_to_rotation, perspective_project
from diffface.landmark_marching import image_axis_of_model_x, march_contour_landmarks
from diffface.morphable_model import load_morphable_model


def _projected_axis(angles: torch.Tensor) -> torch.Tensor:
    """The image direction of model +x measured by projecting two points a millimetre apart (no formula)."""
    points = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64).expand(len(angles), -1, -1)
    translation = torch.tensor([[0.0, 0.0, 1000.0]], dtype=torch.float64).expand(len(angles), -1)
    uv, _ = perspective_project(points, angles, translation, torch.full((len(angles), 1), 1000.0,
                                                                         dtype=torch.float64),
                                torch.full((len(angles), 2), 112.0, dtype=torch.float64))
    step = uv[:, 1] - uv[:, 0]
    return step / step.norm(dim=-1, keepdim=True)


def test_image_axis_matches_projection_for_rolled_heads():
    angles = torch.tensor([[0.0, 0.0, math.radians(40)], [0.1, 0.5, -0.6], [0.0, -0.3, 0.9]], dtype=torch.float64)
    axis = image_axis_of_model_x(euler_to_rotation(angles))
    torch.testing.assert_close(axis, _projected_axis(angles), atol=1e-3, rtol=0)
    # the former formula, R[:2, 0], mirrors the vertical component under roll
    old = euler_to_rotation(angles)[:, :2, 0]
    old = old / old.norm(dim=-1, keepdim=True)
    assert ((old - _projected_axis(angles)).norm(dim=-1) > 0.3).all()


def test_rolled_head_marches_to_the_vertex_furthest_out_in_the_image():
    model = load_morphable_model("builtin").to(torch.float64)
    angles = torch.tensor([[0.0, math.radians(30), math.radians(35)]], dtype=torch.float64)
    translation = torch.tensor([[0.0, 0.0, 1000.0]], dtype=torch.float64)
    uv, _ = perspective_project(model.mean_shape[None], angles, translation,
                                torch.full((1, 1), 1000.0, dtype=torch.float64),
                                torch.full((1, 2), 112.0, dtype=torch.float64))
    indices = march_contour_landmarks(uv, angles, model.landmark_indices, model.contour_landmarks,
                                      model.contour_lines)
    axis = _projected_axis(angles)[0]
    changed = 0
    for line, landmark in zip(model.contour_lines, model.contour_landmarks):
        line = line[line >= 0]
        along = uv[0, line] @ axis
        side = -1.0 if int(landmark) < 8 else 1.0
        expected = int(line[(along * side).argmax()])
        assert int(indices[0, landmark]) == expected
        wrong = euler_to_rotation(angles)[0, :2, 0]  # the former, mirrored axis
        changed += int(line[((uv[0, line] @ (wrong / wrong.norm())) * side).argmax()]) != expected
    assert changed > 0, "the rolled head should separate the correct axis from the mirrored one"
