"""``MeshRenderer``: camera → rasterizer → shader, PyTorch3D style, with swappable parts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffface.camera import PerspectiveCamera, euler_to_rotation, project_points
from diffface.checks import check_shape
from diffface.geometry import rotate_points, vertex_normals

from .fragments import Fragments
from .shaders import ShadingInput


@dataclass(frozen=True)
class RenderOutput:
    """What a :class:`MeshRenderer` returns.

    Shape:
        images: (B, H, W, C) from the shader; fragments: see :class:`Fragments`;
        vertices_screen: (B, V, 3) pixel u, v and camera depth.
    """

    images: torch.Tensor
    fragments: Fragments
    vertices_screen: torch.Tensor


def lighting_frame_normals(vertices: torch.Tensor, faces: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Vertex normals rotated by the head rotation ``R`` (the SH lighting frame).

    Shape:
        vertices: (B, V, 3) model space; faces: (F, 3); angles: (B, 3) -> (B, V, 3).
    """
    return rotate_points(vertex_normals(vertices, faces), euler_to_rotation(angles))


class MeshRenderer(nn.Module):
    """Render batched meshes of one topology with the method's camera.

    Args:
        rasterizer: a module mapping ``(vertices_screen (B, V, 3), faces (F, 3))`` to
            :class:`Fragments` (:class:`~diffface.renderers.rasterize.MeshRasterizer` or the
            PyTorch3D backend).
        shader: a module mapping ``(fragments, ShadingInput)`` to images.
        camera: default :class:`~diffface.camera.PerspectiveCamera`; its parameters can be
            overridden per call (``angles=``, ``translation=``, ``focal=``, ``principal_point=``).

    Shape:
        forward(vertices (B, V, 3) model space, faces (F, 3), albedo (B, V, 3) = None,
        sh (B, 27) = None, attributes (B, V, C) = None, **camera) -> RenderOutput.

    Example:
        >>> renderer = MeshRenderer(MeshRasterizer(RasterSettings(image_size=(224, 224))), SHShader())
        >>> out = renderer(vertices, model.triangles, albedo, sh, angles=a, translation=t,
        ...                focal=f, principal_point=pp)          # out.images: (B, 224, 224, 3)
    """

    def __init__(self, rasterizer: nn.Module, shader: nn.Module, camera: PerspectiveCamera | None = None):
        super().__init__()
        self.rasterizer = rasterizer
        self.shader = shader
        self.camera = camera if camera is not None else PerspectiveCamera()

    def forward(self, vertices: torch.Tensor, faces: torch.Tensor, albedo: torch.Tensor | None = None,
                sh: torch.Tensor | None = None, attributes: torch.Tensor | None = None, **camera) -> RenderOutput:
        check_shape(vertices, ["B", "V", 3], "vertices")
        params = self.camera._resolve(**camera)
        points_camera = self.camera.world_to_camera(vertices, **camera)
        uv = project_points(points_camera, params["focal"], params["principal_point"])
        screen = torch.cat([uv, points_camera[..., 2:]], -1)
        fragments = self.rasterizer(screen, faces)
        mesh = ShadingInput(faces=faces, normals=lighting_frame_normals(vertices, faces, params["angles"]),
                            albedo=albedo, sh=sh, depth=points_camera[..., 2], attributes=attributes)
        return RenderOutput(images=self.shader(fragments, mesh), fragments=fragments, vertices_screen=screen)
