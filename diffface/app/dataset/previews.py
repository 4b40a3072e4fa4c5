"""Curation previews: the crop with the fitted mesh drawn over it, beside the rendered face.

A preview is one PNG, ``2P × P`` pixels: on the left the crop (resampled to ``P``) with a 1 cm grid
drawn on the fitted surface (visible parts only, from one rasterisation), the observed landmarks in
red and the fitted ones in cyan; on the right the fitted face rendered with its albedo and SH light
(mean albedo and a soft frontal light where the fit has none). The same rendering gives the
photometric ``texture_residual`` of :mod:`diffface.app.dataset.quality`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffface.lighting import default_lighting
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.report_images import overlay_landmarks, to_uint8_image

from diffface.data.crops import params_in_crop, resize_transform
from diffface.fitting.texture_fitting import texture_norm
from diffface.renderers import MeshRenderer, RasterSettings, SHShader, interpolate_attributes, make_rasterizer

GRID_MM = 10.0  # spacing of the grid drawn on the fitted surface
GRID_COLOUR = np.array([90, 255, 140], dtype=np.float32)
OBSERVED_COLOUR = (255, 60, 60)
FITTED_COLOUR = (40, 220, 255)
BACKGROUND = 0.16


@dataclass(frozen=True)
class PreviewRendering:
    """The fitted faces rendered at preview size.

    Shape:
        images: (B, 3, P, P) in [0, 1] over a dark grey background; mask: (B, P, P) bool;
        grid: (B, P, P) bool, where the surface grid is drawn; texture_residual: (B,), NaN where the
        parameters carry no lighting.
    """

    images: torch.Tensor
    mask: torch.Tensor
    grid: torch.Tensor
    texture_residual: torch.Tensor


def surface_grid(points: torch.Tensor, mask: torch.Tensor, spacing_mm: float = GRID_MM,
                 width_px: float = 1.0) -> torch.Tensor:
    """Pixels within ``width_px / 2`` of a grid line ``x = k·spacing`` or ``y = k·spacing`` on the surface.

    The distance to a line is measured in pixels through the screen-space gradient of the surface
    coordinate, so lines keep their width where the surface turns away from the camera.

    Args:
        points: the model-space surface point seen at each pixel (mm).
        mask: pixels covered by the surface.

    Shape:
        points: (B, H, W, 3); mask: (B, H, W) -> (B, H, W) bool.
    """
    coordinate = points[..., :2] / spacing_mm  # (B, H, W, 2)
    valid = mask[..., None].to(points.dtype)
    d_row = torch.diff(coordinate, dim=1, append=coordinate[:, -1:]) * valid * valid.roll(-1, 1)
    d_col = torch.diff(coordinate, dim=2, append=coordinate[:, :, -1:]) * valid * valid.roll(-1, 2)
    gradient = (d_row.pow(2) + d_col.pow(2)).sqrt().clamp_min(1e-6)
    distance_px = (coordinate - coordinate.round()).abs() / gradient
    return mask & (distance_px < 0.5 * width_px).any(-1)


def render_previews(model: MorphableModel, params: FaceParameters, crops: torch.Tensor,
                    preview_size: int, backend: str = "auto") -> PreviewRendering:
    """Render fitted faces at ``preview_size`` and measure their photometric residual in the crop.

    Args:
        model: the morphable model.
        params: the faces in the crops' camera (crop pixels); ``beta``/``sh`` may be None.
        crops: the face crops the parameters belong to.
        preview_size: side ``P`` of the rendering.

    Shape:
        params: FaceParameters (B, ...); crops: (B, 3, S, S) -> PreviewRendering with (B, ..., P, P) maps.
    """
    B, S = crops.shape[0], crops.shape[-1]
    has_light = params.sh is not None
    scaled = params_in_crop(params, resize_transform(S, preview_size, B))
    lit = replace(scaled, sh=scaled.sh if has_light else default_lighting(B, device=crops.device),
                  beta=scaled.beta if scaled.beta is not None and model.tex_dims else None)
    # a face mask seen from the front: back faces are hidden anyway, culling them halves the raster work
    settings = RasterSettings(image_size=preview_size, cull_backfaces=True)
    renderer = MeshRenderer(make_rasterizer(settings, backend, crops.device), SHShader())
    with torch.no_grad():
        vertices, albedo = model.from_parameters(lit)
        out = renderer(vertices, model.triangles, albedo, lit.sh, angles=lit.angles, translation=lit.translation,
                       focal=lit.focal, principal_point=lit.principal_point)
        mask = out.fragments.mask
        points = interpolate_attributes(out.fragments, model.triangles, vertices)
        grid = surface_grid(points, mask)
        rendered = out.images.permute(0, 3, 1, 2).clamp(0, 1)
        images = torch.where(mask[:, None], rendered, torch.full_like(rendered, BACKGROUND))
        residual = torch.full((B,), math.nan)
        if has_light:
            small = F.interpolate(rendered, size=(S, S), mode="area")
            coverage = F.interpolate(mask[:, None].to(rendered.dtype), size=(S, S), mode="area")
            full = (coverage > 0.999).to(rendered.dtype)
            residual = texture_norm(small, crops.to(small), full, "l21").cpu()
            residual[full.sum((1, 2, 3)).cpu() == 0] = math.nan
    return PreviewRendering(images=images, mask=mask, grid=grid, texture_residual=residual)


def preview_panel(crop: np.ndarray, rendering: PreviewRendering, index: int, landmarks_observed: np.ndarray,
                  landmarks_fitted: np.ndarray) -> Image.Image:
    """One preview PNG: the crop with grid and landmarks | the rendered face.

    Shape:
        crop: (S, S, 3) uint8; landmarks_*: (68, 2) crop pixels -> a ``2P × P`` RGB image.
    """
    P, S = rendering.images.shape[-1], crop.shape[0]
    left = np.asarray(Image.fromarray(crop).resize((P, P), Image.BILINEAR), dtype=np.float32)
    grid = rendering.grid[index].cpu().numpy()
    left[grid] = 0.45 * left[grid] + 0.55 * GRID_COLOUR
    k = P / S  # crop pixel centres u -> k·(u + 0.5) - 0.5 at preview size
    picture = overlay_landmarks(left.round().astype(np.uint8),
                                [(k * (np.asarray(landmarks_observed) + 0.5) - 0.5, OBSERVED_COLOUR),
                                 (k * (np.asarray(landmarks_fitted) + 0.5) - 0.5, FITTED_COLOUR)],
                                radius=max(1.0, P / 128))
    panel = Image.new("RGB", (2 * P, P))
    panel.paste(picture, (0, 0))
    panel.paste(Image.fromarray(to_uint8_image(rendering.images[index])), (P, 0))
    return panel
