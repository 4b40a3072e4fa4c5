"""Closest points on a triangle mesh: exact point-triangle projection, accelerated by a KD-tree.

:func:`closest_points_on_triangles` is Ericson's region method (*Real-Time Collision Detection*,
5.1.5), vectorised over pairs. :class:`TriangleMeshIndex` finds, for every query point, the exact
closest point on the whole mesh: a ``scipy.spatial.cKDTree`` over the triangle centroids proposes
the ``k`` nearest triangles, and a bound makes the answer exact. Every triangle lies in the ball of
radius ``R`` (the largest centroid-to-vertex distance of the mesh) around its centroid, so a triangle
whose centroid is farther than ``best + R`` from the point cannot beat the best distance found. A
point whose ``k``-th nearest centroid is beyond that bound is settled; the rest get every triangle
whose centroid lies within ``best + R`` (a ball query) and are settled too.

:func:`closest_points_brute_force` is the slow, obviously correct reference (every triangle, and a
different projection: the plane when the foot is inside, else the nearest of the three edges).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["ClosestPoints", "TriangleMeshIndex", "closest_points_on_mesh", "closest_points_on_triangles",
           "closest_points_brute_force", "check_mesh"]

_CHUNK_PAIRS = 1 << 19  # point-triangle pairs evaluated at once (~100 MB of temporaries)


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


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def closest_points_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray,
                                c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closest point of triangle ``(a, b, c)`` to ``p``, pair by pair (Ericson's region method).

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
    ab, ac = b - a, c - a
    ap, bp, cp = points - a, points - b, points - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2

    def ratio(num, den):
        return num / np.where(den == 0, 1.0, den)

    with np.errstate(invalid="ignore", divide="ignore"):
        total = va + vb + vc
        v, w = ratio(vb, total), ratio(vc, total)  # the foot inside the face
        u = 1.0 - v - w
        # Ericson tests A, B, AB, C, AC, BC in that order; applied here in reverse, so earlier ones win.
        e_bc = ratio(d4 - d3, (d4 - d3) + (d5 - d6))
        m = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
        u, v, w = np.where(m, 0.0, u), np.where(m, 1.0 - e_bc, v), np.where(m, e_bc, w)
        e_ac = ratio(d2, d2 - d6)
        m = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        u, v, w = np.where(m, 1.0 - e_ac, u), np.where(m, 0.0, v), np.where(m, e_ac, w)
        m = (d6 >= 0) & (d5 <= d6)
        u, v, w = np.where(m, 0.0, u), np.where(m, 0.0, v), np.where(m, 1.0, w)
        e_ab = ratio(d1, d1 - d3)
        m = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        u, v, w = np.where(m, 1.0 - e_ab, u), np.where(m, e_ab, v), np.where(m, 0.0, w)
        m = (d3 >= 0) & (d4 <= d3)
        u, v, w = np.where(m, 0.0, u), np.where(m, 1.0, v), np.where(m, 0.0, w)
        m = (d1 <= 0) & (d2 <= 0)
        u, v, w = np.where(m, 1.0, u), np.where(m, 0.0, v), np.where(m, 0.0, w)
    bary = np.stack([u, v, w], -1)
    # Degenerate (zero-area) triangles: the region tests assume a proper triangle; use the nearest edge.
    cross = np.cross(ab, ac)
    flat = _dot(cross, cross) <= 1e-24 * _dot(ab, ab) * _dot(ac, ac)
    if flat.any():
        rows = np.flatnonzero(flat)
        bary[rows] = _nearest_edge_barycentrics(points[rows], a[rows], b[rows], c[rows])
    closest = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    return closest, bary


def _nearest_edge_barycentrics(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics of the closest point on the three edges of (possibly degenerate) triangles."""
    best, best_d2 = np.zeros((len(p), 3)), np.full(len(p), np.inf)
    for s0, s1, (i, j) in ((a, b, (0, 1)), (b, c, (1, 2)), (c, a, (2, 0))):
        q, t = _segment_closest(p, s0, s1)
        d2 = ((q - p) ** 2).sum(-1)
        better = d2 < best_d2
        candidate = np.zeros((len(p), 3))
        candidate[:, i], candidate[:, j] = 1 - t, t
        best[better], best_d2[better] = candidate[better], d2[better]
    return best


class TriangleMeshIndex:
    """A triangle mesh prepared for exact closest-point queries (build once, query many times: ICP).

    Args:
        vertices: mesh vertices.
        faces: 0-based triangles.
        k: centroids proposed per point before the exactness bound is checked.

    Shape:
        vertices: (V, 3); faces: (F, 3).

    Example:
        >>> index = TriangleMeshIndex(scan_vertices, scan_faces)
        >>> found = index.query(reconstruction_vertices)   # ClosestPoints
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, k: int = 8):
        self.vertices, self.faces = check_mesh(vertices, faces, "target mesh")
        self.corners = self.vertices[self.faces]  # (F, 3, 3)
        self.centroids = self.corners.mean(1)
        # every triangle lies in this ball around its centroid
        self.triangle_radius = np.sqrt(((self.corners - self.centroids[:, None]) ** 2).sum(-1)).max(1)  # (F,)
        self.radius = float(self.triangle_radius.max())
        self.tree = cKDTree(self.centroids)
        # RMS distance of the vertices from their centroid: the mesh's size, for relative tolerances
        self.size = float(np.sqrt(((self.vertices - self.vertices.mean(0)) ** 2).sum(1).mean()))
        self.k = max(1, min(int(k), len(self.faces)))

    def nearest_vertices(self, points: np.ndarray) -> ClosestPoints:
        """The nearest mesh *vertex* of each point (an upper bound of the surface distance; cheap, for
        scoring rough initialisations). ``triangle_ids`` are -1, ``barycentrics`` zero."""
        if not hasattr(self, "_vertex_tree"):
            self._vertex_tree = cKDTree(self.vertices)
        distances, ids = self._vertex_tree.query(points, workers=-1)
        return ClosestPoints(self.vertices[ids], distances, np.full(len(points), -1), np.zeros((len(points), 3)))

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def _best_of(self, points: np.ndarray, candidates: np.ndarray, centroid_dist: np.ndarray | None = None,
                 upper: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Closest point among ``candidates`` (N, K) triangle ids (``F``: none) per point: (q, d², tri, bary);
        ``d²`` is infinite for a point none of whose candidates was projected.

        With ``centroid_dist`` (N, K), the distances to the candidates' centroids, a candidate whose lower
        bound ``|p − c_t| − r_t`` (``r_t``: its own centroid-to-corner radius) is not below an upper bound
        ``u`` of the answer cannot beat it and is skipped, so most point-triangle projections are never
        computed. ``u`` is ``upper`` (N,) when given, else the distance to the nearest-centroid candidate,
        projected first.
        """
        valid = candidates < self.num_faces
        if centroid_dist is None:
            return self._project(points, candidates, valid)
        head = None
        if upper is None:
            head = self._project(points, candidates[:, :1], valid[:, :1])
            upper = np.sqrt(head[1])
            valid[:, 0] = False
        lower = centroid_dist - self.triangle_radius[np.minimum(candidates, self.num_faces - 1)]
        valid &= lower <= upper[:, None] * (1 + 1e-12) + 1e-12
        best = head if head is not None else self._project(points, candidates[:, :0], valid[:, :0])
        rows = np.flatnonzero(valid.any(1))
        if len(rows):
            rest = self._project(points[rows], candidates[rows], valid[rows])
            better = rest[1] < best[1][rows]
            for slot, value in zip(best, rest):
                slot[rows[better]] = value[better]
        return best

    def _project(self, points: np.ndarray, candidates: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
        """Project every point on its ``valid`` candidates and keep the closest: (q, d², tri, bary)."""
        n, k = candidates.shape
        q_best, d2_best = np.zeros((n, 3)), np.full(n, np.inf)
        tri_best, bary_best = np.full(n, -1, np.int64), np.zeros((n, 3))
        if not valid.any():
            return q_best, d2_best, tri_best, bary_best
        owner, column = np.nonzero(valid)  # row-major: the pairs of each point are consecutive
        flat = candidates[owner, column]
        p = points[owner]
        corners = self.corners[flat]  # (M, 3, 3): one gather, three views
        q, bary = closest_points_on_triangles(p, corners[:, 0], corners[:, 1], corners[:, 2])
        pair_d2 = ((q - p) ** 2).sum(-1)
        d2 = np.full((n, k), np.inf)
        d2[owner, column] = pair_d2
        pair_index = np.full((n, k), -1, np.int64)
        pair_index[owner, column] = np.arange(len(flat))
        best = d2.argmin(1)
        found = np.isfinite(d2[np.arange(n), best])
        pair = pair_index[np.arange(n), best][found]
        q_best[found], d2_best[found], tri_best[found], bary_best[found] = q[pair], pair_d2[pair], flat[pair], bary[pair]
        return q_best, d2_best, tri_best, bary_best

    def query(self, points: np.ndarray, exact: bool = True) -> ClosestPoints:
        """The closest point on the mesh of every query point.

        Args:
            points: query points.
            exact: certify every answer with the centroid bound (module docstring). ``False`` looks
                only at the ``k`` triangles with the nearest centroids: almost always the same answer
                on a regular mesh and several times faster for points far from the surface (what ICP's
                intermediate iterations use; their final correspondences are exact).

        Shape:
            points: (N, 3) -> ClosestPoints with (N, ...) fields.
        """
        points = check_points(points, "query points")
        if not exact:
            k = min(self.k, self.num_faces)
            _, candidates = self.tree.query(points, k, workers=-1)
            q, d2, tri, bary = self._best_of(points, candidates.reshape(len(points), -1))
            return ClosestPoints(points=q, distances=np.sqrt(d2), triangle_ids=tri, barycentrics=bary)
        n = len(points)
        out = [np.empty((n, 3)), np.empty(n), np.empty(n, np.int64), np.empty((n, 3))]
        open_rows = np.arange(n)
        bound = np.full(n, np.inf)
        k = self.k
        # centroid distance within which every candidate was already looked at, per point
        seen = np.full(n, -np.inf)
        while len(open_rows):
            k = min(k, self.num_faces)
            still_open = []
            for start in range(0, len(open_rows), max(1, _CHUNK_PAIRS // k)):
                rows = open_rows[start:start + max(1, _CHUNK_PAIRS // k)]
                # beyond the bound, no triangle can beat the best found so far (module docstring)
                # one bound per chunk (the rows are sorted by bound, so it is near every row's own)
                centroid_dist, candidates = self.tree.query(points[rows], k, distance_upper_bound=bound[rows].max(),
                                                            workers=-1)
                centroid_dist, candidates = centroid_dist.reshape(len(rows), -1), candidates.reshape(len(rows), -1)
                first = not np.isfinite(bound[rows]).any()
                # later rounds skip the triangles nearer than the last round's k-th centroid (seen already)
                candidates = np.where(centroid_dist < seen[rows, None], self.num_faces, candidates)
                q, d2, tri, bary = self._best_of(points[rows], candidates, centroid_dist,
                                                 None if first else np.sqrt(out[1][rows]))
                improved = d2 < np.where(np.isfinite(bound[rows]), out[1][rows], np.inf)
                seen[rows] = centroid_dist[:, -1]
                for slot, value in zip(out, (q, d2, tri, bary)):
                    slot[rows[improved]] = value[improved]
                # a tiny margin so that rounding cannot drop a triangle lying exactly on the bound
                bound[rows] = (np.sqrt(out[1][rows]) + self.radius) * (1 + 1e-12) + 1e-12
                settled = (k >= self.num_faces) | (centroid_dist[:, -1] >= bound[rows])
                still_open.append(rows[~settled])
            open_rows = np.concatenate(still_open)
            open_rows = open_rows[np.argsort(bound[open_rows], kind="stable")]
            k *= 4
        q, d2, tri, bary = out
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
