"""Landmark files: the 300W / iBUG ``.pts`` format.

A ``.pts`` file reads::

    version: 1
    n_points:  68
    {
    x y
    ...
    }

Coordinates are pixels; 300W's annotations are 1-based (the top-left pixel's centre is (1, 1)),
diffface works 0-based (OpenCV), so reading subtracts ``one_based_offset`` and writing adds it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic_io import write_text_atomic

ONE_BASED_OFFSET = 1.0


def read_pts(path: str | Path, one_based_offset: float = ONE_BASED_OFFSET) -> np.ndarray:
    """Read a ``.pts`` file. Shape: -> (N, 2) float64, 0-based pixel coordinates.

    Raises:
        ValueError: naming the file, if it is not a valid ``.pts`` file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read landmark file ({exc})") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    try:
        n_line = next(line for line in lines if line.lower().startswith("n_points"))
        n_points = int(n_line.split(":")[1])
        body = lines[lines.index("{") + 1: lines.index("}")]
        points = np.array([[float(v) for v in line.split()[:2]] for line in body], dtype=np.float64)
    except (StopIteration, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: not a valid .pts file ({exc})") from exc
    if points.shape != (n_points, 2):
        raise ValueError(f"{path}: header says {n_points} points, found {len(points)}")
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: landmarks contain NaN or infinite values")
    return points - one_based_offset


def write_pts(path: str | Path, points: np.ndarray, one_based_offset: float = ONE_BASED_OFFSET) -> Path:
    """Write 0-based ``points (N, 2)`` as a 300W ``.pts`` file (atomically)."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got {points.shape}")
    body = "\n".join(f"{x + one_based_offset:.3f} {y + one_based_offset:.3f}" for x, y in points)
    return write_text_atomic(path, f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n")
