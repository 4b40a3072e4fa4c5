"""Closest points on a triangle mesh: exact point-triangle projection, accelerated by a box tree.

:func:`closest_points_on_triangles` is Ericson's region method (*Real-Time Collision Detection*,
5.1.5), pair by pair. :class:`TriangleMeshIndex` finds, for every query point, the exact closest point
on the whole mesh with a bounding-box tree over the triangles (median splits, a few triangles per
leaf), searched depth first, nearer child first. A node whose box is farther from the point than the
best distance found so far is skipped: its box holds all its triangles, so none of them can be nearer,
and the answer is exact (a 1e-12 relative and absolute margin keeps rounding from skipping a triangle
that lies on the bound). ``query(exact=False)`` instead takes the best of the ``k`` triangles with the
nearest centroids (a ``scipy.spatial.cKDTree``), which can miss the closest.

The projection, the tree's build and its search are compiled with numba
(:mod:`~diffface.evaluation.triangle_kernels`): on first use in a process they are compiled, or loaded
from numba's on-disk cache.

:func:`closest_points_brute_force` is the slow, obviously correct reference (every triangle, and a
different projection: the plane when the foot is inside, else the nearest of the three edges).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.spatial import cKDTree

from .triangle_kernels import build_box_tree, project_pairs, refine_closest, tree_closest

__all__ = ["ClosestPoints", "TriangleMeshIndex", "closest_points_on_mesh", "closest_points_on_triangles",
           "closest_points_brute_force", "check_mesh"]


def _workers(num_points: int) -> int:
    """KD-tree query threads: all cores for large queries only; for the small ones of ICP's iterations,
    starting threads costs more than it saves."""
    return -1 if num_points >= 20_000 else 1


@dataclass(frozen=True)
class ClosestPoints:
    """Closest points on a mesh for a set of query points.

    Shape:
        points: (N, 3) the closest points; distances: (N,); triangle_ids: (N,) int64;
        barycentrics: (N, 3) of ``points`` in their triangle (``points = Σ bᵢ·vertex_i``).
    """

    points: np.ndarray
    distances: np.ndarray
    triangle_ids: np.ndarray
    barycentrics: np.ndarray


def check_mesh(vertices: np.ndarray, faces: np.ndarray, name: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """``(vertices float64 (V, 3), faces int64 (F, 3))``, or a ``ValueError`` naming ``name`` and the fault
    (no vertices, no triangles, NaN/inf, bad shape, index out of range)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{name}: vertices must be (V, 3), got {vertices.shape}")
    if len(vertices) == 0:
        raise ValueError(f"{name}: the mesh is empty (no vertices)")
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and not np.issubdtype(faces.dtype, np.integer)):
        raise ValueError(f"{name}: faces must be integer (F, 3), got {faces.dtype} {faces.shape}")
    if len(faces) == 0:
        raise ValueError(f"{name}: the mesh has no triangles")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"{name}: faces index vertices outside 0..{len(vertices) - 1}")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{name}: vertices contain NaN or infinite values")
    return vertices, faces.astype(np.int64)


def check_points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name} must be (N, 3), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return points


def closest_points_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray,
                                c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closest point of triangle ``(a, b, c)`` to ``p``, pair by pair (Ericson's region method, compiled:
    :func:`~diffface.evaluation.triangle_kernels.project_pairs`; a zero-area triangle takes the nearest
    point of its edges).

    Args:
        points: query points ``p``.
        a, b, c: the triangles' corners.

    Returns:
        ``(closest (M, 3), barycentrics (M, 3))``.

    Shape:
        points, a, b, c: (M, 3).

    Example:
        >>> q, bary = closest_points_on_triangles(p, v[f[:, 0]], v[f[:, 1]], v[f[:, 2]])
    """
    points = check_points(points, "points")
    corners = np.stack([check_points(x, name) for x, name in ((a, "a"), (b, "b"), (c, "c"))], 1)
    if corners.shape[0] != len(points):
        raise ValueError(f"points and triangles must pair up, got {len(points)} points and {len(corners)} triangles")
    return project_pairs(points, corners)


class TriangleMeshIndex:
    """A triangle mesh prepared for exact closest-point queries (build once, query many times: ICP).

    Args:
        vertices: mesh vertices.
        faces: 0-based triangles.
        k: triangles (those of nearest centroid) looked at per point by ``query(exact=False)``.

    Shape:
        vertices: (V, 3); faces: (F, 3).

    Example:
        >>> index = TriangleMeshIndex(scan_vertices, scan_faces)
        >>> found = index.query(reconstruction_vertices)   # ClosestPoints
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, k: int = 8):
        self.vertices, self.faces = check_mesh(vertices, faces, "target mesh")
        self.corners = self.vertices[self.faces]  # (F, 3, 3)
        self.box_tree = build_box_tree(self.corners)
        # every triangle lies in the ball of radius triangle_radius (F,) around its centroid (F, 3)
        spheres = np.empty_like(self.box_tree.spheres)
        spheres[self.box_tree.order] = self.box_tree.spheres
        self.centroids, self.triangle_radius = spheres[:, :3].copy(), spheres[:, 3].copy()
        self.radius = float(self.triangle_radius.max())
        # RMS distance of the vertices from their centroid: the mesh's size, for relative tolerances
        self.size = float(np.sqrt(((self.vertices - self.vertices.mean(0)) ** 2).sum(1).mean()))
        self.k = max(1, min(int(k), len(self.faces)))

    @cached_property
    def tree(self) -> cKDTree:
        """KD-tree over the triangle centroids (for ``query(exact=False)``)."""
        return cKDTree(self.centroids)

    @cached_property
    def vertex_tree(self) -> cKDTree:
        """KD-tree over the vertices (for :meth:`nearest_vertices`)."""
        return cKDTree(self.vertices)

    def nearest_vertices(self, points: np.ndarray) -> ClosestPoints:
        """The nearest mesh *vertex* of each point (an upper bound of the surface distance; cheap, for
        scoring rough initialisations). ``triangle_ids`` are -1, ``barycentrics`` zero."""
        distances, ids = self.vertex_tree.query(points, workers=_workers(len(points)))
        return ClosestPoints(self.vertices[ids], distances, np.full(len(points), -1), np.zeros((len(points), 3)))

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def query(self, points: np.ndarray, exact: bool = True) -> ClosestPoints:
        """The closest point on the mesh of every query point.

        Args:
            points: query points.
            exact: search the box tree (module docstring). ``False`` looks only at the ``k`` triangles
                with the nearest centroids: almost always the same answer on a regular mesh, faster for
                points far from the surface, slower near it.

        Shape:
            points: (N, 3) -> ClosestPoints with (N, ...) fields.
        """
        points = check_points(points, "query points")
        n = len(points)
        found = (np.zeros((n, 3)), np.full(n, np.inf), np.full(n, -1, np.int64), np.zeros((n, 3)))
        if exact:
            tree_closest(self.box_tree, points, *found)
        elif n:
            centroid_dist, candidates = self.tree.query(points, self.k, workers=_workers(n))
            refine_closest(points, self.corners, self.triangle_radius, self.radius, candidates.reshape(n, -1),
                           centroid_dist.reshape(n, -1), *found)
        q, d2, tri, bary = found
        return ClosestPoints(points=q, distances=np.sqrt(d2), triangle_ids=tri, barycentrics=bary)


def closest_points_on_mesh(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> ClosestPoints:
    """The exact closest point on a triangle mesh of every query point (builds a :class:`TriangleMeshIndex`).

    Args:
        points: query points.
        vertices: mesh vertices.
        faces: 0-based triangles.

    Shape:
        points: (N, 3); vertices: (V, 3); faces: (F, 3) -> ClosestPoints with (N, ...) fields.

    Example:
        >>> found = closest_points_on_mesh(np.zeros((1, 3)), vertices, faces)
        >>> found.distances   # (1,)
    """
    return TriangleMeshIndex(vertices, faces).query(points)


def _segment_closest(p: np.ndarray, s0: np.ndarray, s1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = s1 - s0
    length2 = (d * d).sum(-1)
    t = np.clip(((p - s0) * d).sum(-1) / np.where(length2 == 0, 1.0, length2), 0.0, 1.0)
    return s0 + t[..., None] * d, t


def closest_points_brute_force(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> ClosestPoints:
    """Reference for :func:`closest_points_on_mesh`: every triangle for every point, O(N·F).

    Per pair: the orthogonal foot on the triangle's plane when its barycentrics are all ≥ 0, else the
    nearest of the clamped projections onto the three edges.

    Shape:
        points: (N, 3); vertices: (V, 3); faces: (F, 3) -> ClosestPoints with (N, ...) fields.
    """
    points = check_points(points, "query points")
    vertices, faces = check_mesh(vertices, faces)
    a, b, c = (vertices[faces[:, i]][None] for i in range(3))  # (1, F, 3)
    result = ClosestPoints(np.empty((len(points), 3)), np.empty(len(points)), np.empty(len(points), np.int64),
                           np.empty((len(points), 3)))
    step = max(1, 2_000_000 // len(faces))
    for start in range(0, len(points), step):
        p = points[start:start + step, None]  # (n, 1, 3)
        normal = np.cross(b - a, c - a)
        n2 = (normal * normal).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            foot = p - (((p - a) * normal).sum(-1) / n2)[..., None] * normal
            # barycentrics of the foot by sub-triangle areas
            u = (np.cross(b - foot, c - foot) * normal).sum(-1) / n2
            v = (np.cross(c - foot, a - foot) * normal).sum(-1) / n2
            w = 1.0 - u - v
        inside = (n2 > 0) & (u >= 0) & (v >= 0) & (w >= 0)
        candidates = []
        for s0, s1, slots in ((a, b, (0, 1)), (b, c, (1, 2)), (c, a, (2, 0))):
            q, t = _segment_closest(p, np.broadcast_to(s0, foot.shape), np.broadcast_to(s1, foot.shape))
            bary = np.zeros(foot.shape)
            bary[..., slots[0]], bary[..., slots[1]] = 1 - t, t
            candidates.append((q, bary))
        best_q = np.where(inside[..., None], foot, candidates[0][0])
        best_b = np.where(inside[..., None], np.stack([u, v, w], -1), candidates[0][1])
        best_d = np.where(inside, ((foot - p) ** 2).sum(-1), ((candidates[0][0] - p) ** 2).sum(-1))
        for q, bary in candidates[1:]:
            d = ((q - p) ** 2).sum(-1)
            better = ~inside & (d < best_d)
            best_q = np.where(better[..., None], q, best_q)
            best_b = np.where(better[..., None], bary, best_b)
            best_d = np.where(better, d, best_d)
        tri = best_d.argmin(1)
        rows = slice(start, start + len(p))
        idx = np.arange(len(p))
        result.points[rows], result.distances[rows] = best_q[idx, tri], np.sqrt(best_d[idx, tri])
        result.triangle_ids[rows], result.barycentrics[rows] = tri, best_b[idx, tri]
    return result
