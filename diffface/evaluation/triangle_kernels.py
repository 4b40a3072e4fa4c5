"""Compiled (numba) point-triangle kernels behind :class:`~diffface.evaluation.closest_point.TriangleMeshIndex`.

- :func:`triangle_barycentrics`: the closest point of one triangle to one point (Ericson's region
  method, *Real-Time Collision Detection* 5.1.5; a zero-area triangle takes its nearest edge point).
- :func:`project_pairs`: that, pair by pair over arrays.
- :func:`build_box_tree` and :func:`tree_closest`: the exact closest point on a whole mesh, by a
  bounding-box tree searched depth first with pruning.
- :func:`refine_closest`: the closest of given candidate triangles per point (KD-tree proposals).

Every function is compiled on first call and cached on disk beside this file (``__pycache__``, or
numba's user-wide cache where that is not writable); where no cache location is writable they are
compiled in memory once per process. Loops over points run in parallel (``numba.set_num_threads``).
:func:`~diffface.evaluation.closest_point.closest_points_brute_force` is the independent reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

__all__ = ["BoxTree", "build_box_tree", "tree_closest", "triangle_barycentrics", "project_pairs",
           "refine_closest"]

_FLAT = 1e-24  # |ab × ac|² ≤ _FLAT · |ab|²·|ac|²: a zero-area triangle (as in closest_points_on_triangles)
_MARGIN = 1e-12  # relative and absolute slack, so that rounding cannot prune a triangle on the bound


def _compile(**options):
    """``numba.njit(cache=True, **options)``, or without the on-disk cache where no location is writable
    (numba raises at decoration time then, e.g. a read-only install without a writable home)."""
    def decorate(function):
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:
            return numba.njit(cache=False, **options)(function)
    return decorate


@_compile(inline="always")
def _ratio(numerator, denominator):
    return numerator / (1.0 if denominator == 0.0 else denominator)


@_compile(inline="always")
def _segment(px, py, pz, sx, sy, sz, ex, ey, ez):
    """Parameter ``t`` ∈ [0, 1] of the closest point of segment ``s → e`` to ``p``, and its squared distance."""
    dx, dy, dz = ex - sx, ey - sy, ez - sz
    length2 = dx * dx + dy * dy + dz * dz
    t = ((px - sx) * dx + (py - sy) * dy + (pz - sz) * dz) / (1.0 if length2 == 0.0 else length2)
    t = min(max(t, 0.0), 1.0)
    qx, qy, qz = sx + t * dx - px, sy + t * dy - py, sz + t * dz - pz
    return t, qx * qx + qy * qy + qz * qz


@_compile()
def triangle_barycentrics(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz):
    """Barycentrics ``(u, v, w)`` of the closest point of triangle ``(a, b, c)`` to ``p`` (all scalars).

    Ericson's regions A, B, AB, C, AC, BC, then the face; a zero-area triangle (where the regions do not
    apply) takes the nearest point of its three edges.
    """
    abx, aby, abz = bx - ax, by - ay, bz - az
    acx, acy, acz = cx - ax, cy - ay, cz - az
    crx, cry, crz = aby * acz - abz * acy, abz * acx - abx * acz, abx * acy - aby * acx
    if crx * crx + cry * cry + crz * crz <= _FLAT * (abx * abx + aby * aby + abz * abz) * (
            acx * acx + acy * acy + acz * acz):
        t, best = _segment(px, py, pz, ax, ay, az, bx, by, bz)
        u, v, w = 1.0 - t, t, 0.0
        t, d2 = _segment(px, py, pz, bx, by, bz, cx, cy, cz)
        if d2 < best:
            u, v, w, best = 0.0, 1.0 - t, t, d2
        t, d2 = _segment(px, py, pz, cx, cy, cz, ax, ay, az)
        if d2 < best:
            u, v, w = t, 0.0, 1.0 - t
        return u, v, w
    apx, apy, apz = px - ax, py - ay, pz - az
    d1, d2 = abx * apx + aby * apy + abz * apz, acx * apx + acy * apy + acz * apz
    if d1 <= 0.0 and d2 <= 0.0:
        return 1.0, 0.0, 0.0
    bpx, bpy, bpz = px - bx, py - by, pz - bz
    d3, d4 = abx * bpx + aby * bpy + abz * bpz, acx * bpx + acy * bpy + acz * bpz
    if d3 >= 0.0 and d4 <= d3:
        return 0.0, 1.0, 0.0
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        e = _ratio(d1, d1 - d3)
        return 1.0 - e, e, 0.0
    cpx, cpy, cpz = px - cx, py - cy, pz - cz
    d5, d6 = abx * cpx + aby * cpy + abz * cpz, acx * cpx + acy * cpy + acz * cpz
    if d6 >= 0.0 and d5 <= d6:
        return 0.0, 0.0, 1.0
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        e = _ratio(d2, d2 - d6)
        return 1.0 - e, 0.0, e
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and d4 - d3 >= 0.0 and d5 - d6 >= 0.0:
        e = _ratio(d4 - d3, (d4 - d3) + (d5 - d6))
        return 0.0, 1.0 - e, e
    total = va + vb + vc
    v, w = _ratio(vb, total), _ratio(vc, total)
    return 1.0 - v - w, v, w


@_compile(inline="always")
def _project_one(points, i, corners, t):
    """``points[i]`` projected on triangle ``corners[t]``: ``(d², qx, qy, qz, u, v, w)``."""
    px, py, pz = points[i, 0], points[i, 1], points[i, 2]
    ax, ay, az = corners[t, 0, 0], corners[t, 0, 1], corners[t, 0, 2]
    bx, by, bz = corners[t, 1, 0], corners[t, 1, 1], corners[t, 1, 2]
    cx, cy, cz = corners[t, 2, 0], corners[t, 2, 1], corners[t, 2, 2]
    u, v, w = triangle_barycentrics(px, py, pz, ax, ay, az, bx, by, bz, cx, cy, cz)
    qx, qy, qz = u * ax + v * bx + w * cx, u * ay + v * by + w * cy, u * az + v * bz + w * cz
    return (qx - px) ** 2 + (qy - py) ** 2 + (qz - pz) ** 2, qx, qy, qz, u, v, w


@_compile(parallel=True)
def project_pairs(points, corners):
    """The closest point of triangle ``corners[m]`` to ``points[m]``, pair by pair.

    Args:
        points: float64 query points.
        corners: float64 triangles, ``corners[m, j]`` the ``j``-th corner of the ``m``-th.

    Returns:
        ``(closest (M, 3), barycentrics (M, 3))``.

    Shape:
        points: (M, 3); corners: (M, 3, 3).
    """
    m = points.shape[0]
    closest, bary = np.empty((m, 3)), np.empty((m, 3))
    for i in prange(m):
        _, closest[i, 0], closest[i, 1], closest[i, 2], bary[i, 0], bary[i, 1], bary[i, 2] = \
            _project_one(points, i, corners, i)
    return closest, bary


@_compile(parallel=True)
def refine_closest(points, corners, triangle_radius, max_radius, candidates, centroid_dist,
                   closest, distance2, triangle_ids, bary):
    """Improve each point's closest point with its candidate triangles, in place.

    A row's candidates come sorted by the distance of their centroid (as from a KD-tree over the
    centroids); ``candidates == F`` (or ``centroid_dist`` infinite) means none. A triangle lies within
    ``triangle_radius[t]`` of its centroid, so ``centroid_dist − triangle_radius[t]`` bounds its distance
    from below: a candidate whose bound exceeds the best distance so far is not projected, and once
    ``centroid_dist − max_radius`` exceeds it, neither is any later candidate of the row. Only a strictly
    nearer triangle replaces the current answer, so ties keep the earlier one (as ``argmin`` would).

    Args:
        points: float64 query points.
        corners: float64 mesh triangles.
        triangle_radius: each triangle's largest centroid-to-corner distance.
        max_radius: ``triangle_radius.max()``.
        candidates: int64 triangle ids per point, by increasing centroid distance.
        centroid_dist: the distances from each point to its candidates' centroids.
        closest, distance2, triangle_ids, bary: the current answer, updated in place (start from
            ``distance2 = inf``, ``triangle_ids = -1`` for points with none yet).

    Shape:
        points: (N, 3); corners: (F, 3, 3); triangle_radius: (F,); candidates, centroid_dist: (N, K);
        closest, bary: (N, 3); distance2, triangle_ids: (N,).
    """
    n, k = candidates.shape
    num_faces = corners.shape[0]
    for i in prange(n):
        limit = np.sqrt(distance2[i]) * (1.0 + _MARGIN) + _MARGIN
        for j in range(k):
            dist = centroid_dist[i, j]
            if dist - max_radius > limit:
                break  # so are all later candidates (and a missing one's distance is infinite)
            t = candidates[i, j]
            if t < 0 or t >= num_faces or dist - triangle_radius[t] > limit:
                continue
            d2, qx, qy, qz, u, v, w = _project_one(points, i, corners, t)
            if d2 < distance2[i]:
                distance2[i], triangle_ids[i] = d2, t
                closest[i, 0], closest[i, 1], closest[i, 2] = qx, qy, qz
                bary[i, 0], bary[i, 1], bary[i, 2] = u, v, w
                limit = np.sqrt(d2) * (1.0 + _MARGIN) + _MARGIN


@dataclass(frozen=True)
class BoxTree:
    """A balanced bounding-box tree over a mesh's triangles, for exact closest-point queries.

    Node 1 is the root, node ``i`` has children ``2i`` and ``2i + 1``; the leaves are nodes
    ``first_leaf … 2·first_leaf − 1``. Node ``i`` holds the triangles ``order[start[i]:end[i]]`` (mesh
    ids), which its children split at their median centroid along its longest extent, and ``boxes[i]``
    (``lo xyz, hi xyz``) bounds their corners. ``corners`` and ``spheres`` (centroid xyz, radius) are per
    triangle, in tree order.

    Shape:
        order: (F,) int64; corners: (F, 3, 3); spheres: (F, 4); boxes: (2·first_leaf, 6);
        start, end: (2·first_leaf,) int64.
    """

    order: np.ndarray
    corners: np.ndarray
    spheres: np.ndarray
    boxes: np.ndarray
    start: np.ndarray
    end: np.ndarray
    first_leaf: int


@_compile()
def _select(order, keys, axis, lo, hi, k):
    """Permute rows ``lo:hi`` of ``order`` and ``keys`` alike so that no ``keys[·, axis]`` before row ``k``
    is greater than row ``k``'s and none after it smaller (Hoare's quickselect)."""
    hi -= 1
    while hi > lo:
        pivot = keys[(lo + hi) // 2, axis]
        i, j = lo, hi
        while i <= j:
            while keys[i, axis] < pivot:
                i += 1
            while keys[j, axis] > pivot:
                j -= 1
            if i <= j:
                order[i], order[j] = order[j], order[i]
                for column in range(3):
                    keys[i, column], keys[j, column] = keys[j, column], keys[i, column]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return


@_compile()
def _median_splits(centroids, depth):
    """``(order (F,), start, end (2^(depth+1),))`` of a tree halving each node at its median centroid."""
    count = centroids.shape[0]
    order, keys = np.arange(count), centroids.copy()  # keys[i] = centroids[order[i]]
    start, end = np.zeros(2 << depth, np.int64), np.zeros(2 << depth, np.int64)
    end[1] = count
    for node in range(1, 1 << depth):
        s, e = start[node], end[node]
        longest, longest_extent = 0, -1.0
        for axis in range(3):
            lo, hi = keys[s, axis], keys[s, axis]
            for i in range(s + 1, e):
                lo, hi = min(lo, keys[i, axis]), max(hi, keys[i, axis])
            if hi - lo > longest_extent:
                longest, longest_extent = axis, hi - lo
        mid = (s + e) // 2
        _select(order, keys, longest, s, e, mid)
        start[2 * node], end[2 * node] = s, mid
        start[2 * node + 1], end[2 * node + 1] = mid, e
    return order, start, end


@_compile()
def _tree_geometry(corners, start, end, first_leaf):
    """``(spheres (F, 4), boxes (2·first_leaf, 6))`` of triangles ``corners`` (F, 3, 3) in tree order."""
    count = corners.shape[0]
    spheres = np.empty((count, 4))
    for t in range(count):
        for axis in range(3):
            spheres[t, axis] = (corners[t, 0, axis] + corners[t, 1, axis] + corners[t, 2, axis]) / 3.0
        radius2 = 0.0
        for corner in range(3):
            dx, dy, dz = (corners[t, corner, 0] - spheres[t, 0], corners[t, corner, 1] - spheres[t, 1],
                          corners[t, corner, 2] - spheres[t, 2])
            radius2 = max(radius2, dx * dx + dy * dy + dz * dz)
        spheres[t, 3] = np.sqrt(radius2)
    boxes = np.empty((2 * first_leaf, 6))
    boxes[0] = np.nan  # node 0 is unused
    for node in range(first_leaf, 2 * first_leaf):
        boxes[node, :3], boxes[node, 3:] = np.inf, -np.inf
        for t in range(start[node], end[node]):
            for corner in range(3):
                for axis in range(3):
                    boxes[node, axis] = min(boxes[node, axis], corners[t, corner, axis])
                    boxes[node, 3 + axis] = max(boxes[node, 3 + axis], corners[t, corner, axis])
    for node in range(first_leaf - 1, 0, -1):
        for axis in range(3):
            boxes[node, axis] = min(boxes[2 * node, axis], boxes[2 * node + 1, axis])
            boxes[node, 3 + axis] = max(boxes[2 * node, 3 + axis], boxes[2 * node + 1, 3 + axis])
    return spheres, boxes


def build_box_tree(corners: np.ndarray, leaf_size: int = 4) -> BoxTree:
    """A :class:`BoxTree` over triangles whose leaves hold at most ``leaf_size`` (≥ 2) of them.

    Shape:
        corners: (F, 3, 3) float64.
    """
    if leaf_size < 2:
        raise ValueError(f"leaf_size must be at least 2, got {leaf_size}")
    count = len(corners)
    # halving ``depth`` times leaves more than leaf_size / 2 ≥ 1 triangles in every leaf
    depth = int(np.ceil(np.log2(count / leaf_size))) if count > leaf_size else 0
    order, start, end = _median_splits(corners.mean(1), depth)
    corners = np.ascontiguousarray(corners[order])
    spheres, boxes = _tree_geometry(corners, start, end, 1 << depth)
    return BoxTree(order=order, corners=corners, spheres=spheres, boxes=boxes, start=start, end=end,
                   first_leaf=1 << depth)


@_compile(inline="always")
def _box_distance2(boxes, node, px, py, pz):
    """Squared distance from ``p`` to box ``node`` (0 inside it)."""
    gx = max(boxes[node, 0] - px, px - boxes[node, 3], 0.0)
    gy = max(boxes[node, 1] - py, py - boxes[node, 4], 0.0)
    gz = max(boxes[node, 2] - pz, pz - boxes[node, 5], 0.0)
    return gx * gx + gy * gy + gz * gz


@_compile()
def _morton_codes(points, lo, cells_per_unit):
    """Each point's position (N,) along a Z-order curve of 1024³ cells of size ``1 / cells_per_unit`` from
    ``lo`` (points outside clamp to the border)."""
    codes = np.empty(points.shape[0], np.int64)
    for i in range(points.shape[0]):
        code = 0
        for axis in range(3):
            x = int(min(max((points[i, axis] - lo[axis]) * cells_per_unit, 0.0), 1023.0))
            x = (x | (x << 16)) & 0x030000FF  # spread 10 bits two apart
            x = (x | (x << 8)) & 0x0300F00F
            x = (x | (x << 4)) & 0x030C30C3
            x = (x | (x << 2)) & 0x09249249
            code |= x << axis
        codes[i] = code
    return codes


@_compile(parallel=True)
def _tree_closest(points, visit, corners, order, spheres, boxes, start, end, first_leaf,
                  closest, distance2, triangle_ids, bary):
    n = visit.shape[0]
    chunk = 64
    for c in prange((n + chunk - 1) // chunk):
        stack, stack_d2 = np.empty(128, np.int64), np.empty(128)
        for j in range(c * chunk, min(n, (c + 1) * chunk)):
            i = visit[j]
            px, py, pz = points[i, 0], points[i, 1], points[i, 2]
            limit = np.sqrt(distance2[i]) * (1.0 + _MARGIN) + _MARGIN
            top, stack[0], stack_d2[0] = 0, 1, _box_distance2(boxes, 1, px, py, pz)
            while top >= 0:
                node, node_d2 = stack[top], stack_d2[top]
                top -= 1
                if node_d2 > limit * limit:
                    continue  # the best found since it was pushed is nearer than its box
                if node < first_leaf:
                    near, far = 2 * node, 2 * node + 1
                    near_d2, far_d2 = _box_distance2(boxes, near, px, py, pz), _box_distance2(boxes, far, px, py, pz)
                    if near_d2 > far_d2:
                        near, far, near_d2, far_d2 = far, near, far_d2, near_d2
                    if far_d2 <= limit * limit:
                        top += 1
                        stack[top], stack_d2[top] = far, far_d2
                    if near_d2 <= limit * limit:  # popped first
                        top += 1
                        stack[top], stack_d2[top] = near, near_d2
                    continue
                for t in range(start[node], end[node]):
                    cx, cy, cz = spheres[t, 0] - px, spheres[t, 1] - py, spheres[t, 2] - pz
                    if cx * cx + cy * cy + cz * cz > (limit + spheres[t, 3]) ** 2:
                        continue  # farther than the bound even from the triangle's bounding sphere
                    d2, qx, qy, qz, u, v, w = _project_one(points, i, corners, t)
                    if d2 < distance2[i]:
                        distance2[i], triangle_ids[i] = d2, order[t]
                        closest[i, 0], closest[i, 1], closest[i, 2] = qx, qy, qz
                        bary[i, 0], bary[i, 1], bary[i, 2] = u, v, w
                        limit = np.sqrt(d2) * (1.0 + _MARGIN) + _MARGIN


def tree_closest(tree: BoxTree, points: np.ndarray, closest: np.ndarray, distance2: np.ndarray,
                 triangle_ids: np.ndarray, bary: np.ndarray) -> None:
    """The exact closest point on the tree's triangles of every point, improving the given answer in place.

    Depth first, nearer child first; a node whose box is farther than the best distance so far (plus a
    1e-12 relative and absolute margin against rounding) cannot hold a nearer triangle and is skipped,
    and so is a triangle whose bounding sphere is. Start from ``distance2 = inf`` for no prior answer; a
    finite one only lets the search skip more: the answer changes only for a strictly nearer triangle.
    The points are visited in Z-order, so that consecutive ones share the tree's branches in cache.

    Args:
        tree: from :func:`build_box_tree`.
        points: float64 query points.
        closest, distance2, triangle_ids, bary: the answer (triangle ids index the mesh, not the tree).

    Shape:
        points, closest, bary: (N, 3); distance2, triangle_ids: (N,).
    """
    root_lo, root_hi = tree.boxes[1, :3], tree.boxes[1, 3:]
    visit = np.argsort(_morton_codes(points, root_lo, 1024.0 / max(float((root_hi - root_lo).max()), 1e-300)))
    _tree_closest(points, visit, tree.corners, tree.order, tree.spheres, tree.boxes, tree.start,
                  tree.end, tree.first_leaf, closest, distance2, triangle_ids, bary)
