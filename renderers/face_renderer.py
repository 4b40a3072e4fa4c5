"""Render a batch of :class:`~diffface.params.FaceParameters` through a morphable model."""

from __future__ import annotations

import torch
from torch import nn

from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters

from .mesh_renderer import MeshRenderer, RenderOutput
from .pytorch3d_backend import make_rasterizer
from .rasterize import RasterSettings
from .shaders import SHShader


class FaceRenderer(nn.Module):
    """The method's image formation for whole parameter vectors: model → camera → raster → SH.

    Args:
        model: the morphable model (its triangles are the mesh topology).
        image_size: ``(H, W)`` or an int.
        per_pixel: shade per pixel instead of per vertex.
        backend: rasterizer backend, ``"auto"``, ``"builtin"`` or ``"pytorch3d"``.

    Shape:
        forward(params (B, ...), background (B, 3, H, W) or None) -> RenderOutput with images
        (B, H, W, 3); where no face covers a pixel the background (or 0) shows.

    Example:
        >>> renderer = FaceRenderer(model, 224)
        >>> out = renderer(params)        # params.beta and params.sh must be set
    """

    def __init__(self, model: MorphableModel, image_size: int | tuple[int, int], per_pixel: bool = False,
                 backend: str = "auto"):
        super().__init__()
        self.model = model
        settings = RasterSettings(image_size=image_size)
        self.renderer = MeshRenderer(make_rasterizer(settings, backend, model.mean_shape.device),
                                     SHShader(per_pixel=per_pixel))

    def forward(self, params: FaceParameters, background: torch.Tensor | None = None) -> RenderOutput:
        if params.sh is None:
            raise ValueError("rendering needs SH lighting: FaceParameters.sh is None")
        vertices, albedo = self.model.from_parameters(params)
        out = self.renderer(vertices, self.model.triangles, albedo, params.sh, angles=params.angles,
                            translation=params.translation, focal=params.focal,
                            principal_point=params.principal_point)
        if background is None:
            return out
        images = torch.where(out.fragments.mask[..., None], out.images, background.permute(0, 2, 3, 1))
        return RenderOutput(images=images, fragments=out.fragments, vertices_screen=out.vertices_screen)
