"""Self-supervised photometric loss: render the prediction and compare it with the input photo.

Per vertex, as the method's texture term (no rasterizer): the predicted shape is shaded with the
model's mean albedo under SH lighting *fitted* to the photo in closed form (ridge least squares per
image and colour channel, 27 coefficients, treated as a constant), the photo is sampled at the
predicted projections, and the two are compared over the visible vertices inside the crop (the face
region). Unlabelled photos can so add a training signal without parameters.

The renderer's sampling and visibility helpers are imported here, lazily, so that networks/ model and
checkpoint code never imports a renderer.
"""

from __future__ import annotations

import torch
from torch import nn

from diffface.checks import check_shape
from diffface.lighting import lighting_design, sh_shading, solve_sh_lighting
from diffface.morphable_model import MorphableModel

from .distributed import rank_mean_denominator
from .losses import vertex_subset
from diffface.camera import world_to_camera
from diffface.renderers import lighting_frame_normals, observe_vertices


class PhotometricLoss(nn.Module):
    """Mean absolute colour difference between the shaded prediction and the photo (see the module docstring).

    Args:
        model: the morphable model (its mean albedo and triangles).
        num_vertices: compare a fixed random subset of this many vertices (0: all).
        seed: seed of the subset.

    Shape:
        forward(params (B, P) unnormalised, images (B, 3, H, W) in [0, 1]) -> scalar.

    Example:
        >>> loss = PhotometricLoss(model, num_vertices=2000)
        >>> loss(regressor(crops), crops).backward()
    """

    def __init__(self, model: MorphableModel, num_vertices: int = 2000, seed: int = 0):
        super().__init__()
        self.model = model
        subset = vertex_subset(model.num_vertices, num_vertices, seed)
        self.register_buffer("vertex_indices", torch.arange(model.num_vertices) if subset is None else subset,
                             persistent=False)

    def forward(self, params: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        check_shape(images, [params.shape[0], 3, "H", "W"], "images")
        groups = self.model.layout.unpack(params)
        vertices = self.model.shape(groups.alpha_id, groups.alpha_exp)
        normals = lighting_frame_normals(vertices, self.model.triangles, groups.angles)[:, self.vertex_indices]
        vertices = vertices[:, self.vertex_indices]
        points_camera = world_to_camera(vertices, groups.angles, groups.translation)
        seen = observe_vertices(points_camera, normals, groups.focal, groups.principal_point, images)
        sampled, weights = seen.sampled, seen.usable.to(seen.sampled.dtype)
        albedo = self.model.albedo(batch=params.shape[0])[:, self.vertex_indices]
        with torch.no_grad():
            lighting = solve_sh_lighting(lighting_design(albedo, normals), sampled, weights, ridge=1e-3)
        rendered = sh_shading(albedo, normals, lighting)
        residual = (rendered - sampled).abs().sum(-1) * weights
        # the mean over the compared vertices of the global batch, also under torchrun (see the helper)
        return residual.sum() / rank_mean_denominator(3 * weights.sum()).clamp_min(1.0)
