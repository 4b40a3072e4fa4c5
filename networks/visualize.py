"""Predictions rendered over their input crops (TensorBoard's sample images).

Imports the renderer lazily: only training's logging needs it.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from diffface.lighting import default_lighting
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.renderers import FaceRenderer

OVERLAY_OPACITY = 0.6


@torch.no_grad()
def prediction_overlays(model: MorphableModel, params: FaceParameters, images: torch.Tensor,
                        opacity: float = OVERLAY_OPACITY) -> torch.Tensor:
    """The predicted face, shaded with its albedo (the mean albedo when ``params.beta`` is None, as for a network
    prediction) under the default light, blended over each image.

    Shape:
        params: B samples in the images' camera; images: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1].
    """
    batch, _, height, width = images.shape
    light = default_lighting(batch, dtype=images.dtype, device=images.device)
    params = replace(params, sh=light)
    renderer = FaceRenderer(model, (height, width), backend="builtin").to(images.device)
    out = renderer(params)
    rendered = out.images.permute(0, 3, 1, 2).clamp(0, 1)
    mask = out.fragments.mask[:, None].to(images.dtype)
    return images * (1 - opacity * mask) + rendered * opacity * mask
