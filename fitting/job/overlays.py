"""A subject's fitted mesh drawn over its frames, as an animation (``DIR/overlays/<subject>.<gif|png|mp4|webm>``).

Each frame is the original image (scaled so that its longer side is at most ``max_side`` pixels) with the
fitted mesh rendered over it, shaded with the fitted lighting after stage 2 and a neutral light after
stage 1, half transparent, and the observed landmarks (green) beside the fitted ones (red).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffface.landmarks import CropTransform, read_image
from diffface.lighting import default_lighting
from diffface.morphable_model import MorphableModel
from diffface.renderers import FaceRenderer
from diffface.report_images import overlay_landmarks
from diffface.video_io import write_animation

from .batch import BatchFit
from .config import OVERLAY_FORMATS
from .inputs import FitItem

OVERLAYS_DIR = "overlays"


def _resize_transform(scale: float, size: tuple[int, int]) -> CropTransform:
    """Original pixels to the pixels of the frame resized by ``scale`` (pixel centres move: ``u' = s·(u + ½) − ½``)."""
    s, t = float(scale), 0.5 * float(scale) - 0.5
    matrix = torch.tensor([[[s, 0.0, t], [0.0, s, t], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    return CropTransform(matrix=matrix, size=max(size))


def overlay_frames(model: MorphableModel, items: list[FitItem], fit: BatchFit, max_side: int = 320,
                   opacity: float = 0.6) -> list[np.ndarray]:
    """The overlay picture of every fitted frame. Shape: -> N × (h, w, 3) uint8."""
    device = model.mean_shape.device
    renderers: dict[tuple[int, int], FaceRenderer] = {}
    pictures = []
    for b, item in enumerate(items):
        image = read_image(item.image)
        height, width = image.shape[:2]
        scale = min(1.0, max_side / max(height, width))
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        small = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
        resize = _resize_transform(scale, size)
        params = fit.params.index(slice(b, b + 1))
        focal, principal_point = resize.apply_camera(params.focal.double().cpu(), params.principal_point.double().cpu())
        params = replace(params.map(lambda t: t.to(device)), focal=focal.float().to(device),
                         principal_point=principal_point.float().to(device))
        if params.beta is None:
            params = replace(params, beta=torch.zeros(1, model.tex_dims, device=device))
        if params.sh is None:
            params = replace(params, sh=default_lighting(1, device=device))
        if size not in renderers:
            renderers[size] = FaceRenderer(model, size, backend="builtin").to(device)
        with torch.no_grad():
            out = renderers[size](params)
        rendered = out.images[0].clamp(0, 1).cpu().numpy()
        mask = out.fragments.mask[0].cpu().numpy()[..., None] * opacity
        blended = (small / 255.0) * (1 - mask) + rendered * mask
        picture = (blended * 255).round().astype(np.uint8)
        observed, fitted = (resize.apply_points(torch.as_tensor(np.asarray(points), dtype=torch.float64)[None])[0]
                            .numpy() for points in (item.landmarks, fit.landmarks[b].cpu()))
        pictures.append(np.asarray(overlay_landmarks(picture, [(observed, (80, 255, 80)),
                                                               (fitted, (255, 60, 60))], radius=1.0)))
    return pictures


def write_overlay_animation(model: MorphableModel, segments: list[tuple[BatchFit, list[FitItem]]], out_dir: Path,
                            subject: str, fmt: str, fps: float = 10) -> Path:
    """Write ``out_dir/overlays/<subject>.<fmt>`` for a fitted subject: every frame of its fitted segments
    (``(fit, items)`` in order), frames of other sizes scaled to the first's."""
    if fmt not in OVERLAY_FORMATS[1:]:
        raise ValueError(f"overlay format must be one of {OVERLAY_FORMATS[1:]}, got {fmt!r}")
    pictures = [picture for fit, items in segments for picture in overlay_frames(model, items, fit)]
    first = pictures[0].shape[:2]
    pictures = [p if p.shape[:2] == first else np.asarray(Image.fromarray(p).resize((first[1], first[0])))
                for p in pictures]
    path = Path(out_dir) / OVERLAYS_DIR / f"{subject}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_animation(path, pictures, fps=fps)
