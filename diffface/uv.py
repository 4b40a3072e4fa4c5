"""Mesh helpers every model loader needs: a vertical head axis, fallback UVs, outward winding.

All functions take plain numpy arrays in diffface's model space (millimetres, +y up, +z out of
the face towards the viewer; see :mod:`diffface.model_format`).
"""

from __future__ import annotations

import numpy as np


def head_axis(mean_shape: np.ndarray) -> tuple[float, float]:
    """Where the vertical axis through the head pierces the horizontal (x, z) plane.

    The axis lies midway between the mesh's leftmost and rightmost points, half the mesh's width
    behind its frontmost point: the axis of a cylinder inscribed in the head. This works for
    face-only masks as well as full heads, where the vertex centroid would sit too close to the face.

    Args:
        mean_shape: vertices.

    Returns:
        ``(center_x, center_z)`` in the units of ``mean_shape``.

    Shape:
        mean_shape: (V, 3).

    Example:
        >>> head_axis(np.array([[-1., 0, 0], [1, 0, 0], [0, 0, 1]]))
        (0.0, 0.0)
    """
    x, z = mean_shape[:, 0], mean_shape[:, 2]
    half_width = 0.5 * float(x.max() - x.min())
    return 0.5 * float(x.max() + x.min()), float(z.max()) - half_width


def cylindrical_uv(mean_shape: np.ndarray) -> np.ndarray:
    """Texture coordinates for a model that has none: a cylinder around :func:`head_axis`.

    ``u`` follows the azimuth (increasing towards +x, the subject's left, so a frontal view is not
    mirrored) and ``v`` the height (``v`` up); both are stretched to fill [0, 1].

    Args:
        mean_shape: vertices.

    Returns:
        uv coordinates in [0, 1].

    Shape:
        mean_shape: (V, 3) -> (V, 2).

    Example:
        >>> uv = cylindrical_uv(np.array([[-1., -1, 0], [1, -1, 0], [0, 1, 1]]))
        >>> bool(uv.min() >= 0 and uv.max() <= 1)
        True
    """
    mean_shape = np.asarray(mean_shape, dtype=np.float64)
    center_x, center_z = head_axis(mean_shape)
    azimuth = np.arctan2(mean_shape[:, 0] - center_x, mean_shape[:, 2] - center_z)
    return np.stack([_unit_range(azimuth), _unit_range(mean_shape[:, 1])], axis=1)


def _unit_range(values: np.ndarray) -> np.ndarray:
    span = float(values.max() - values.min())
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def outward_score(vertices: np.ndarray, triangles: np.ndarray) -> float:
    """How much the triangles face away from the head: ``Σ (e1 × e2) · (centroid - axis point)``.

    For a closed mesh this is six times its signed volume (positive when counter-clockwise seen
    from outside); for an open face mask it is the area-weighted vote of face normals against the
    direction from :func:`head_axis` (taken at the mesh's mid-height) to each face.

    Shape:
        vertices: (V, 3); triangles: (F, 3) -> float.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    v0, v1, v2 = (vertices[triangles[:, i]] for i in range(3))
    center_x, center_z = head_axis(vertices)
    center = np.array([center_x, 0.5 * (vertices[:, 1].max() + vertices[:, 1].min()), center_z])
    normals = np.cross(v1 - v0, v2 - v0)
    return float(np.einsum("fi,fi->", normals, (v0 + v1 + v2) / 3 - center))


def orient_triangles_outward(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return triangles wound counter-clockwise seen from outside, flipping all of them if needed.

    The mesh's winding is assumed consistent; only its global sense is decided, by the sign of
    :func:`outward_score`.

    Args:
        vertices: mesh vertices.
        triangles: 0-based vertex indices.

    Returns:
        ``(triangles, flipped)``: the (possibly reordered) triangles and whether they were flipped.

    Shape:
        vertices: (V, 3); triangles: (F, 3) -> ((F, 3), bool).

    Example:
        >>> v = np.array([[0., 0, 1], [1, 0, 1], [0, 1, 1]])
        >>> orient_triangles_outward(v, np.array([[0, 2, 1]]))[0].tolist()
        [[0, 1, 2]]
    """
    triangles = np.asarray(triangles)
    if outward_score(vertices, triangles) >= 0:
        return triangles, False
    return np.ascontiguousarray(triangles[:, [0, 2, 1]]), True
