"""Small pictures for reports: images with landmark overlays, tiled into grids (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """A float image in [0, 1] to uint8. Shape: (H, W, 3) or (3, H, W) -> (H, W, 3)."""
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.permute(1, 2, 0)
    return (image.detach().cpu().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def overlay_landmarks(image: np.ndarray, landmark_sets: list[tuple[np.ndarray, tuple[int, int, int]]],
                      radius: float = 1.5) -> Image.Image:
    """Draw landmark sets (each ``((N, 2) px, RGB)``) on an ``(H, W, 3)`` uint8 image."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    for landmarks, colour in landmark_sets:
        for x, y in np.asarray(landmarks, dtype=np.float64):
            if np.isfinite(x) and np.isfinite(y):
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=colour)
    return picture


def save_panel_grid(panels: list[Image.Image], path: str | Path, columns: int = 4) -> Path:
    """Tile panels (all the same size) into one PNG."""
    path = Path(path)
    w, h = panels[0].size
    rows = (len(panels) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h), (0, 0, 0))
    for i, panel in enumerate(panels):
        grid.paste(panel, ((i % columns) * w, (i // columns) * h))
    grid.save(path)
    return path


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()
