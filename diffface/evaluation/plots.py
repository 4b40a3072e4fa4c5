"""CED plots drawn with Pillow (no matplotlib): axes, ticks, one coloured curve per method, AUC legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic_io import atomic_write
from .metrics import auc, ced_curve

__all__ = ["plot_ced"]

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def plot_ced(errors_by_method: dict[str, np.ndarray], path: str | Path, max_error: float = 1.0,
             xlabel: str = "normalised distance d", size: tuple[int, int] = (640, 480)) -> Path:
    """Write a PNG of the CED curve of every method over ``[0, max_error]``, the AUC in the legend.

    Args:
        errors_by_method: method name -> per-sample errors (``inf`` for failures).
        path: the PNG to write.
        max_error: the x-axis range.
        xlabel: the x-axis label.
        size: image (width, height) in pixels.

    Example:
        >>> plot_ced({"icp": np.array([0.1, 0.3])}, "ced.png")
    """
    if not errors_by_method:
        raise ValueError("plot_ced needs at least one method")
    width, height = size
    left, right, top, bottom = 60, 20, 20, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    x0, x1, y0, y1 = left, width - right, height - bottom, top

    def to_px(x, y):
        return x0 + (x1 - x0) * x / max_error, y0 + (y1 - y0) * y

    for i in range(11):  # grid and ticks
        gx, _ = to_px(max_error * i / 10, 0)
        _, gy = to_px(0, i / 10)
        draw.line([(gx, y0), (gx, y1)], fill=(230, 230, 230))
        draw.line([(x0, gy), (x1, gy)], fill=(230, 230, 230))
        draw.text((gx - 8, y0 + 5), f"{max_error * i / 10:.2g}", fill="black", font=font)
        draw.text((x0 - 30, gy - 6), f"{i / 10:.1f}", fill="black", font=font)
    draw.rectangle([x0, y1, x1, y0], outline="black")
    draw.text(((x0 + x1) / 2 - 60, height - 20), xlabel, fill="black", font=font)
    draw.text((5, top - 15), "fraction of samples", fill="black", font=font)
    thresholds = np.linspace(0, max_error, 401)
    for k, (name, errors) in enumerate(errors_by_method.items()):
        colour = COLOURS[k % len(COLOURS)]
        curve = ced_curve(errors, thresholds)
        draw.line([to_px(t, c) for t, c in zip(thresholds, curve)], fill=colour, width=2)
        ly = y1 + 8 + 16 * k  # legend, upper left inside the axes
        draw.line([(x0 + 10, ly + 6), (x0 + 30, ly + 6)], fill=colour, width=3)
        draw.text((x0 + 36, ly), f"{name} (AUC {auc(errors, max_error):.3f})", fill="black", font=font)
    path = Path(path)
    with atomic_write(path) as handle:
        image.save(handle, format="PNG")
    return path
