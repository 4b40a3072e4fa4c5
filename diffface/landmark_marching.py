"""Contour-landmark "marching": the jaw landmarks of a turned face sit on its silhouette, not on
fixed vertices. Each contour landmark has a line of parallel vertices (from the face centre
outwards); the landmark's vertex is the one on that line that projects furthest outwards along
the face's horizontal image axis, i.e. on the current silhouette.
"""

from __future__ import annotations

import torch

from .camera import euler_to_rotation, model_to_camera_flip, perspective_project
from .checks import check_shape
from .morphable_model import MorphableModel
from .params import FaceParameters

NUM_LANDMARKS = 68
CHIN_LANDMARK = 8


def image_axis_of_model_x(rotation: torch.Tensor) -> torch.Tensor:
    """Unit image direction (u, v) of the model's +x axis under ``rotation``.

    The camera sees ``F·R·x`` with ``F = diag(1, -1, -1)`` (:data:`~diffface.camera.MODEL_TO_CAMERA_FLIP`),
    so the first column's image part is ``(R00, -R10)``: the flip negates the second row too (taking
    ``R[:2, 0]`` mirrors the axis whenever the head is rolled).

    Shape:
        rotation: (B, 3, 3) -> (B, 2).
    """
    axis = rotation[:, :2, 0] * model_to_camera_flip(rotation)[:2]
    return axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def march_contour_landmarks(uv: torch.Tensor, angles: torch.Tensor, landmark_indices: torch.Tensor,
                            contour_landmarks: torch.Tensor, contour_lines: torch.Tensor) -> torch.Tensor:
    """Per-sample landmark vertex indices with the contour landmarks moved to the silhouette.

    Landmarks left of the chin (iBUG 0-7, the subject's right, model ``x < 0``) take the line
    vertex with the smallest projection on the image direction of the model's +x axis; those right
    of it (9-16) the largest.

    Args:
        uv: projected vertices (all of the model's vertices).
        angles: the camera angles used for ``uv`` (to know the face's horizontal image axis).
        landmark_indices: the model's static landmark vertices (contour ones: frontal vertex).
        contour_landmarks: which landmark each line belongs to.
        contour_lines: line vertices, padded with -1.

    Returns:
        Landmark vertex indices.

    Shape:
        uv: (B, V, 2); angles: (B, 3); landmark_indices: (68,); contour_landmarks: (C,);
        contour_lines: (C, K) -> (B, 68).
    """
    check_shape(uv, ["B", "V", 2], "uv")
    check_shape(angles, [uv.shape[0], 3], "angles")
    B = uv.shape[0]
    indices = landmark_indices.to(uv.device).expand(B, -1).clone()
    if contour_lines.numel() == 0:
        return indices
    lines = contour_lines.to(uv.device)
    valid = lines >= 0
    axis = image_axis_of_model_x(euler_to_rotation(angles))  # (B, 2)
    line_uv = uv[:, lines.clamp_min(0)]  # (B, C, K, 2)
    along = (line_uv * axis[:, None, None, :]).sum(-1)  # (B, C, K)
    sign = torch.where(contour_landmarks.to(uv.device) < CHIN_LANDMARK, -1.0, 1.0).to(uv.dtype)
    score = along * sign[None, :, None]
    score = torch.where(valid[None], score, torch.full_like(score, -torch.inf))
    best = score.argmax(-1)  # (B, C)
    chosen = torch.gather(lines.expand(B, -1, -1), 2, best[..., None])[..., 0]
    indices[:, contour_landmarks.to(uv.device)] = chosen
    return indices


def project_landmarks(model: MorphableModel, params: FaceParameters,
                      vertices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """2D landmarks of faces (contour landmarks marched to the silhouette).

    Returns:
        ``(landmarks_2d, landmark_vertex_indices)``.

    Shape:
        -> (B, 68, 2), (B, 68).
    """
    if vertices is None:
        vertices = model.shape(params.alpha_id, params.alpha_exp)
    uv, _ = perspective_project(vertices, params.angles, params.translation, params.focal, params.principal_point)
    indices = march_contour_landmarks(uv, params.angles, model.landmark_indices, model.contour_landmarks,
                                      model.contour_lines)
    return torch.gather(uv, 1, indices[..., None].expand(-1, -1, 2)), indices
