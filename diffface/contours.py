"""Face-contour geometry for landmark marching.

The iBUG jaw landmarks (1-8 on the subject's right, 10-17 on the left, 1-based) are not fixed
vertices: on a turned face they slide to the silhouette. Marching needs, for each such landmark, a
line of "parallel" candidate vertices (Zhu et al., 3DDFA): here the mesh vertices near the
horizontal plane through the landmark's frontal vertex, on its side of the face, ordered by
azimuth around the vertical head axis from the face centre outwards.

Landmark numbers in this module are 0-based, like ``MorphableModelData.landmark_indices``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.spatial import cKDTree

from .uv import head_axis

IBUG_RIGHT_CONTOUR = tuple(range(0, 8))
"""iBUG 1-8 (0-based 0-7): the subject's right jaw line, from the ear down to the chin."""
IBUG_CHIN = 8
IBUG_LEFT_CONTOUR = tuple(range(9, 17))
"""iBUG 10-17 (0-based 9-16): the subject's left jaw line, from the chin up to the ear."""
IBUG_CONTOUR = IBUG_RIGHT_CONTOUR + IBUG_LEFT_CONTOUR
IBUG_EYE_OUTER_CORNERS = (36, 45)


def vertex_spacing(mean_shape: np.ndarray) -> float:
    """The median distance from a vertex to its nearest neighbour (the mesh's resolution).

    Shape:
        mean_shape: (V, 3) -> float.
    """
    distances, _ = cKDTree(mean_shape).query(mean_shape, k=2)
    nonzero = distances[:, 1][distances[:, 1] > 0]
    return float(np.median(nonzero)) if nonzero.size else 1.0


def build_contour_lines(mean_shape: np.ndarray, landmark_indices: np.ndarray, contour_landmarks: Sequence[int],
                        band_mm: float | None = None, max_azimuth_deg: float | None = None) -> np.ndarray:
    """The marching line of every contour landmark, padded with ``-1``.

    Each line holds at most one vertex per azimuth step of about one vertex spacing: in every step
    the vertex closest to the landmark's horizontal plane (within ``band_mm``) is kept, so the line
    is a clean one-vertex-wide curve. The landmark's own vertex is always on its line.

    Args:
        mean_shape: model vertices (millimetres, +y up, +z towards the viewer).
        landmark_indices: the vertex of every landmark; contour landmarks must have one
            (their frontal position).
        contour_landmarks: 0-based landmark numbers to build lines for.
        band_mm: half-height of the slab around the plane; default the mesh's vertex spacing.
        max_azimuth_deg: drop vertices further round than this from the front (0° is straight
            ahead, 90° the side of the head); default keep the whole half-slice.

    Returns:
        Vertex indices of each line ordered from the face centre outwards, ``-1`` padded.

    Shape:
        mean_shape: (V, 3); landmark_indices: (68,); contour_landmarks: (C,) -> (C, K) int64.

    Example:
        >>> xs, ys = np.meshgrid(np.linspace(-50, 50, 11), np.linspace(-50, 50, 11))
        >>> grid = np.stack([xs.ravel(), ys.ravel(), np.zeros(121)], 1)
        >>> marks = np.full(68, -1); marks[0] = 55  # x = -50, y = 0
        >>> build_contour_lines(grid, marks, [0]).tolist()
        [[60, 59, 58, 57, 56, 55]]
    """
    mean_shape = np.asarray(mean_shape, dtype=np.float64)
    landmark_indices = np.asarray(landmark_indices)
    spacing = vertex_spacing(mean_shape)
    band = spacing if band_mm is None else float(band_mm)
    center_x, center_z = head_axis(mean_shape)
    lines = []
    for landmark in contour_landmarks:
        vertex = int(landmark_indices[landmark])
        if vertex < 0:
            raise ValueError(f"contour landmark {landmark} (0-based) has no vertex; give it a frontal default first")
        side = np.sign(mean_shape[vertex, 0] - center_x) or (-1.0 if landmark in IBUG_RIGHT_CONTOUR else 1.0)
        lateral = side * (mean_shape[:, 0] - center_x)
        azimuth = np.arctan2(lateral, mean_shape[:, 2] - center_z)
        height_gap = np.abs(mean_shape[:, 1] - mean_shape[vertex, 1])
        keep = (height_gap <= band) & (lateral >= 0)
        if max_azimuth_deg is not None:
            keep &= azimuth <= np.deg2rad(max_azimuth_deg)
        keep[vertex] = True
        candidates = np.flatnonzero(keep)
        radius = max(float(np.hypot(lateral[vertex], mean_shape[vertex, 2] - center_z)), spacing)
        step = np.floor(azimuth[candidates] / (spacing / radius)).astype(np.int64)
        gap = np.where(candidates == vertex, -1.0, height_gap[candidates])  # the landmark wins its step
        order = np.lexsort((gap, step))
        first_in_step = np.ones(order.size, dtype=bool)
        first_in_step[1:] = step[order][1:] != step[order][:-1]
        picked = candidates[order][first_in_step]
        lines.append(picked[np.argsort(azimuth[picked], kind="stable")])
    width = max((line.size for line in lines), default=0)
    out = np.full((len(lines), width), -1, dtype=np.int64)
    for row, line in enumerate(lines):
        out[row, :line.size] = line
    return out


def frontal_contour_vertices(mean_shape: np.ndarray, outline: Sequence[int], top_y: float | None,
                             count: int = 8) -> np.ndarray:
    """Frontal default vertices for one side's jaw landmarks, spaced evenly along a face outline.

    iBUG places the 8 jaw points of a side at equal steps along the face boundary from about the
    height of the outer eye corner down to the chin; this picks the outline vertices nearest those
    steps (by arc length), from the top down.

    Args:
        mean_shape: model vertices.
        outline: the side's outline vertex indices (e.g. eos' ``sfm_model_contours.json``), top to
            bottom or bottom to top.
        top_y: height of the first landmark (e.g. the outer eye corners' mean ``y``); ``None``
            starts at the top of the outline.
        count: number of landmarks (the chin itself excluded).

    Returns:
        The outline vertex of every landmark, top first.

    Shape:
        mean_shape: (V, 3); outline: (N,) -> (count,) int64.

    Example:
        >>> line = np.stack([np.zeros(9), -np.arange(9.0), np.zeros(9)], 1)
        >>> frontal_contour_vertices(line, list(range(9)), None, count=4).tolist()
        [0, 2, 4, 6]
    """
    outline = np.asarray(outline, dtype=np.int64)
    points = np.asarray(mean_shape, dtype=np.float64)[outline]
    if points[0, 1] < points[-1, 1]:
        outline, points = outline[::-1], points[::-1]
    if top_y is not None and points[0, 1] > top_y > points[-1, 1]:
        first_below = int(np.argmax(points[:, 1] <= top_y))
        a, b = points[first_below - 1], points[first_below]
        start = a + (b - a) * (a[1] - top_y) / (a[1] - b[1])
        outline, points = outline[first_below:], np.vstack([start, points[first_below:]])
        vertex_arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])[1:]
    else:
        vertex_arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    total = float(vertex_arc[-1])
    targets = total * np.arange(count) / count
    nearest = np.abs(vertex_arc[None, :] - targets[:, None]).argmin(axis=1)
    return outline[nearest]
