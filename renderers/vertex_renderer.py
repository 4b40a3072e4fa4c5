"""The method's texture term: shade every vertex (SH on albedo and normal), sample the target image at every
projected vertex, mask by normal visibility (and, optionally, by the z-buffer's self-occlusion test:
:func:`depth_visibility`), and compare both in the model's UV frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffface.camera import PerspectiveCamera, euler_to_rotation, model_to_camera_flip, project_points
from diffface.checks import check_shape
from diffface.geometry import rotate_points
from diffface.lighting import sh_shading

from .mesh_renderer import lighting_frame_normals
from .rasterize import rasterize_meshes
from .uv_frame import UVFrame


def sample_image_at_points(image: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear samples of ``image`` at pixel coordinates (pixel centres at integers, OpenCV).

    Returns:
        ``(samples, inside)``: sampled values (zero outside) and whether each point lies inside.

    Shape:
        image: (B, C, H, W); points: (B, N, 2) as (u, v) -> (B, N, C), (B, N) bool.
    """
    check_shape(image, ["B", "C", "H", "W"], "image")
    check_shape(points, [image.shape[0], "N", 2], "points")
    H, W = image.shape[-2:]
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], dtype=points.dtype, device=points.device)
    grid = (points * scale - 1)[:, :, None, :].to(image.dtype)
    samples = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = (points[..., 0] >= 0) & (points[..., 0] <= W - 1) & (points[..., 1] >= 0) & (points[..., 1] <= H - 1)
    return samples[..., 0].transpose(1, 2), inside


def normal_visibility(points_camera: torch.Tensor, normals_camera: torch.Tensor) -> torch.Tensor:
    """Front-facing test: a vertex is visible if its normal points toward the camera centre.

    Shape:
        points_camera: (B, V, 3); normals_camera: (B, V, 3) -> (B, V) bool.
    """
    check_shape(points_camera, ["B", "V", 3], "points_camera")
    check_shape(normals_camera, ["B", "V", 3], "normals_camera")
    return (normals_camera * -points_camera).sum(-1) > 0


def depth_visibility(points_camera: torch.Tensor, points: torch.Tensor, faces: torch.Tensor,
                     image_size: tuple[int, int], tolerance: float) -> torch.Tensor:
    """Self-occlusion through the z-buffer: a vertex is hidden when, at each of the four pixel centres around
    its projection, the mesh's nearest surface lies more than ``tolerance`` (camera-depth units, e.g. mm) in
    front of it (the nose over the far cheek at large yaw); one centre showing the vertex's own surface, or no
    surface, keeps it visible (on a steep slope the surface a pixel away is deeper or shallower than the vertex).
    Vertices off the image count as visible here (the image test judges them). No gradients: a mask.

    Shape:
        points_camera: (B, V, 3); points: (B, V, 2) their pixels; faces: (F, 3) -> (B, V) bool.
    """
    check_shape(points_camera, ["B", "V", 3], "points_camera")
    check_shape(points, [points_camera.shape[0], points_camera.shape[1], 2], "points")
    height, width = image_size
    with torch.no_grad():
        depth = points_camera[..., 2]
        fragments = rasterize_meshes(torch.cat([points, depth[..., None]], -1).detach(), faces, (height, width))
        zbuf, mask = fragments.zbuf.flatten(1), fragments.mask.flatten(1)
        hidden = torch.ones_like(depth, dtype=torch.bool)
        for du in (0, 1):
            for dv in (0, 1):
                u, v = points[..., 0].floor().long() + du, points[..., 1].floor().long() + dv
                inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
                flat = v.clamp(0, height - 1) * width + u.clamp(0, width - 1)
                in_front = mask.gather(1, flat) & (zbuf.gather(1, flat) + tolerance < depth)
                hidden &= inside & in_front
        return ~hidden


@dataclass(frozen=True)
class VertexObservation:
    """What the photo shows at each vertex (the per-vertex half of the texture term and the photometric loss).

    Shape:
        points: (B, V, 2) pixels; sampled: (B, V, C) the image there; visible: (B, V) front-facing;
        usable: (B, V) front-facing and inside the image.
    """

    points: torch.Tensor
    sampled: torch.Tensor
    visible: torch.Tensor
    usable: torch.Tensor


def observe_vertices(points_camera: torch.Tensor, normals: torch.Tensor, focal: torch.Tensor,
                     principal_point: torch.Tensor, image: torch.Tensor,
                     unoccluded: torch.Tensor | None = None) -> VertexObservation:
    """Project camera-space vertices, sample ``image`` there and tell which vertices face the camera (and,
    with ``unoccluded`` from :func:`depth_visibility`, which no other part of the mesh hides).

    Shape:
        points_camera: (B, V, 3); normals: (B, V, 3) in the lighting frame (the rotated model frame, which
        :data:`~diffface.camera.MODEL_TO_CAMERA_FLIP` takes to the camera's); focal: (B, 1);
        principal_point: (B, 2); image: (B, C, H, W); unoccluded: (B, V) bool -> :class:`VertexObservation`.
    """
    points = project_points(points_camera, focal, principal_point)
    visible = normal_visibility(points_camera, normals * model_to_camera_flip(normals))
    if unoccluded is not None:
        visible = visible & unoccluded
    sampled, inside = sample_image_at_points(image, points)
    return VertexObservation(points=points, sampled=sampled, visible=visible, usable=visible & inside)


@dataclass(frozen=True)
class VertexRenderOutput:
    """Everything the texture term compares.

    Shape:
        rendered_uv, target_uv: (B, 3, S, S); mask_uv: (B, 1, S, S) float in {0, 1};
        vertex_colors, sampled_colors: (B, V, 3); visible: (B, V) bool; uv_points: (B, V, 2).
    """

    rendered_uv: torch.Tensor
    target_uv: torch.Tensor
    mask_uv: torch.Tensor
    vertex_colors: torch.Tensor
    sampled_colors: torch.Tensor
    visible: torch.Tensor
    uv_points: torch.Tensor


class VertexRenderer(nn.Module):
    """Per-vertex SH shading and image sampling, compared in a fixed-size UV image.

    Args:
        uv: (V, 2) the model's UV coordinates; faces: (F, 3); uv_size: UV image side;
        camera: default camera (parameters overridable per call); uv_frame: a ready
        :class:`UVFrame` for these vertices (then ``uv`` and ``uv_size`` are not used).

    Shape:
        forward(vertices (B, V, 3), albedo (B, V, 3), sh (B, 27), image (B, 3, H, W), model_normals
        (B, V, 3) = None, unoccluded (B, V) bool = None, **camera) -> VertexRenderOutput. ``model_normals``:
        the vertices' normals in model space when the caller already has them (e.g. many camera updates of one
        shape); ``unoccluded``: :func:`depth_visibility`'s mask, ANDed with the normal test.
    """

    def __init__(self, uv: torch.Tensor, faces: torch.Tensor, uv_size: int = 128,
                 camera: PerspectiveCamera | None = None, uv_frame: UVFrame | None = None):
        super().__init__()
        self.uv_frame = uv_frame if uv_frame is not None else UVFrame(uv, faces, uv_size)
        self.register_buffer("faces", faces.long())
        self.camera = camera if camera is not None else PerspectiveCamera()

    def forward(self, vertices: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor, image: torch.Tensor,
                model_normals: torch.Tensor | None = None, unoccluded: torch.Tensor | None = None,
                **camera) -> VertexRenderOutput:
        params = self.camera._resolve(**camera)
        points_camera = self.camera.world_to_camera(vertices, **camera)
        if model_normals is None:
            normals = lighting_frame_normals(vertices, self.faces, params["angles"])
        else:
            check_shape(model_normals, list(vertices.shape), "model_normals")
            normals = rotate_points(model_normals, euler_to_rotation(params["angles"]))
        seen = observe_vertices(points_camera, normals, params["focal"], params["principal_point"], image,
                                unoccluded)
        vertex_colors = sh_shading(albedo, normals, sh)
        sampled = seen.sampled
        usable = seen.usable.to(vertex_colors.dtype)[..., None]
        # the three per-vertex signals go through the UV frame together: one gather instead of three
        channels = (vertex_colors.shape[-1], sampled.shape[-1], 1)
        packed = self.uv_frame(torch.cat([vertex_colors, sampled.to(vertex_colors.dtype), usable], -1))
        rendered_uv, target_uv, usable_uv = packed.split(channels, dim=1)
        # a texel counts only if all three of its triangle's vertices are usable
        mask = (usable_uv > 1 - 1e-4).to(vertex_colors.dtype) * self.uv_frame.mask.to(vertex_colors.dtype)
        return VertexRenderOutput(
            rendered_uv=rendered_uv, target_uv=target_uv, mask_uv=mask, vertex_colors=vertex_colors,
            sampled_colors=sampled, visible=seen.visible, uv_points=seen.points,
        )
