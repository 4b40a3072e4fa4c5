"""Synthetic scans shared by the evaluation tests and benchmarks (as ``rasterize_reference`` is for the renderer)."""

from __future__ import annotations

import numpy as np


def height_field_scan(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A curved, asymmetric face-like height field (distinct principal axes), about 160 × 208 mm.

    Shape:
        -> vertices (n², 3) float64, faces (2·(n − 1)², 3) int.
    """
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1.3, 1.3, n))
    z = 0.6 * np.exp(-(x ** 2 + y ** 2) * 1.5) + 0.15 * np.sin(3 * x + 1) * np.cos(2 * y) + 0.2 * x * y
    vertices = np.stack([x, y, z], -1).reshape(-1, 3) * 80
    i = np.arange(n * n).reshape(n, n)
    faces = np.concatenate([np.stack([i[:-1, :-1], i[:-1, 1:], i[1:, 1:]], -1).reshape(-1, 3),
                            np.stack([i[:-1, :-1], i[1:, 1:], i[1:, :-1]], -1).reshape(-1, 3)])
    return vertices, faces
