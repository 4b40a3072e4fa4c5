"""Small pictures for reports: projected faces with their landmarks, drawn with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def draw_landmark_panel(size: int, points_uv: np.ndarray, point_rgb: np.ndarray, point_depth: np.ndarray,
                        landmark_sets: list[tuple[np.ndarray, tuple[int, int, int]]]) -> Image.Image:
    """One panel: the face's projected vertices (painter's order, far first) and landmark sets.

    Shape:
        points_uv: (V, 2) px; point_rgb: (V, 3) in [0, 1]; point_depth: (V,);
        each landmark set: ((68, 2) px, RGB colour).
    """
    canvas = np.full((size, size, 3), 24, dtype=np.uint8)
    order = np.argsort(-point_depth)
    uv = np.round(points_uv[order]).astype(int)
    rgb = (np.clip(point_rgb[order], 0, 1) * 255).astype(np.uint8)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < size) & (uv[:, 1] >= 0) & (uv[:, 1] < size)
    for du in (0, 1):
        for dv in (0, 1):
            u = np.clip(uv[inside, 0] + du, 0, size - 1)
            v = np.clip(uv[inside, 1] + dv, 0, size - 1)
            canvas[v, u] = rgb[inside]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for landmarks, colour in landmark_sets:
        for x, y in landmarks:
            if np.isfinite(x) and np.isfinite(y):
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], outline=colour)
    return image


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
