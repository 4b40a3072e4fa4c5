"""The compiled point-triangle kernels against the brute-force reference, on awkward inputs."""

import numpy as np
import pytest
import torch

from diffface.alignment import procrustes
from diffface.evaluation import (TriangleMeshIndex, closest_points_brute_force, closest_points_on_mesh,
                                 closest_points_on_triangles, triangle_kernels)
from diffface.evaluation.icp import _procrustes_np
from diffface.evaluation.reference_meshes import height_field_scan


def awkward_triangles(rng):
    """``(proper, flat, needles)`` triangles: random ones; zero-area ones (two corners equal, all three
    equal, three collinear corners); and slivers 1e-9 wide.

    Shape:
        -> three (M, 3, 3) arrays.
    """
    proper = rng.normal(size=(60, 3, 3))
    a, b = rng.normal(size=(2, 10, 3))
    collinear = np.stack([a, b, a + rng.uniform(-1, 2, size=(10, 1)) * (b - a)], 1)
    flat = np.concatenate([np.stack([a, b, b], 1), np.stack([b, a, a], 1), np.stack([a, a, a], 1), collinear])
    needles = np.stack([a, b, b + 1e-9 * rng.normal(size=(10, 3))], 1)
    return proper, flat, needles


def queries_for(corners, rng):
    """Per triangle: a nearby random point, a far one, each corner, an edge point, an in-plane interior point.

    Shape:
        corners: (M, 3, 3) -> (points (7·M, 3), corners (7·M, 3, 3)) paired row by row.
    """
    m = len(corners)
    weights = rng.dirichlet([1, 1, 1], m)
    interior = np.einsum("mk,mkd->md", weights, corners)
    edge = corners[:, 0] + rng.uniform(size=(m, 1)) * (corners[:, 1] - corners[:, 0])
    points = [interior + rng.normal(size=(m, 3)), 1e3 * rng.normal(size=(m, 3)), corners[:, 0], corners[:, 1],
              corners[:, 2], edge, interior]
    return np.concatenate(points), np.concatenate([corners] * len(points))


def distance_to_edges(points, corners):
    """The distance from each point to the nearest of its triangle's three edges (the whole of a zero-area
    triangle), by clamped projection on each segment.

    Shape:
        points: (M, 3); corners: (M, 3, 3) -> (M,).
    """
    best = np.full(len(points), np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        start, direction = corners[:, i], corners[:, j] - corners[:, i]
        length2 = (direction ** 2).sum(1)
        t = np.clip(((points - start) * direction).sum(1) / np.where(length2 > 0, length2, 1.0), 0, 1)
        best = np.minimum(best, np.linalg.norm(start + t[:, None] * direction - points, axis=1))
    return best


def project(points, corners):
    closest, bary = closest_points_on_triangles(points, corners[:, 0], corners[:, 1], corners[:, 2])
    np.testing.assert_allclose(np.einsum("mk,mkd->md", bary, corners), closest, atol=1e-12)
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-12)
    assert (bary >= -1e-12).all()
    return np.linalg.norm(closest - points, axis=1)


def test_pairwise_projection_matches_brute_force():
    rng = np.random.default_rng(0)
    proper, flat, needles = awkward_triangles(rng)
    points, corners = queries_for(proper, rng)
    distances = project(points, corners)
    faces = np.arange(3).reshape(1, 3)
    for p, tri, distance in zip(points, corners, distances):
        np.testing.assert_allclose(distance, closest_points_brute_force(p[None], tri, faces).distances[0],
                                   rtol=1e-12, atol=1e-12)
    # a zero-area triangle is its edges (the brute force's plane test is meaningless for collinear corners
    # whose cross product rounds to a tiny non-zero vector)
    points, corners = queries_for(flat, rng)
    np.testing.assert_allclose(project(points, corners), distance_to_edges(points, corners), rtol=1e-12,
                               atol=1e-12)
    # a 1e-9 sliver is not flat enough for the edge rule, and its region tests lose digits to cancellation:
    # the point is still on the triangle, within its width of the nearest edge point
    points, corners = queries_for(needles, rng)
    np.testing.assert_allclose(project(points, corners), distance_to_edges(points, corners), atol=1e-8)


def test_pairwise_projection_of_a_point_on_the_triangle_is_itself():
    rng = np.random.default_rng(1)
    corners = rng.normal(size=(50, 3, 3))
    weights = rng.dirichlet([1, 1, 1], 50)
    points = np.einsum("mk,mkd->md", weights, corners)
    closest, bary = closest_points_on_triangles(points, corners[:, 0], corners[:, 1], corners[:, 2])
    np.testing.assert_allclose(closest, points, atol=1e-12)
    np.testing.assert_allclose(bary, weights, atol=1e-9)


def test_pairwise_projection_rejects_bad_input():
    a = np.zeros((4, 3))
    with pytest.raises(ValueError, match="pair up"):
        closest_points_on_triangles(np.zeros((3, 3)), a, a, a)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        closest_points_on_triangles(np.zeros((4, 2)), a, a, a)
    with pytest.raises(ValueError, match="NaN"):
        closest_points_on_triangles(np.full((4, 3), np.nan), a, a, a)


def random_mesh_with_degenerate_triangles(rng):
    vertices = rng.normal(size=(80, 3))
    faces = rng.integers(0, 80, size=(200, 3))  # repeats make zero-area triangles
    faces[:10, 2] = faces[:10, 1]
    faces[10:15] = faces[10:15, :1]  # all three corners equal
    vertices[70:] = vertices[60:70]  # duplicated vertices: ties between distinct triangles
    return vertices, np.concatenate([faces, faces[20:40]])  # duplicated triangles too


def mesh_queries(vertices, faces, rng):
    edge_points = (vertices[faces[:, 0]] + vertices[faces[:, 1]]) / 2
    return np.concatenate([rng.normal(size=(200, 3)), 50 * rng.normal(size=(30, 3)), vertices, edge_points,
                           vertices.mean(0, keepdims=True)])


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_exact_query_matches_brute_force_on_degenerate_mesh(offset):
    rng = np.random.default_rng(2)
    vertices, faces = random_mesh_with_degenerate_triangles(rng)
    points = mesh_queries(vertices, faces, rng) + offset
    vertices = vertices + offset
    index = TriangleMeshIndex(vertices, faces)
    fast, slow = index.query(points), closest_points_brute_force(points, vertices, faces)
    np.testing.assert_allclose(fast.distances, slow.distances, atol=1e-12 * max(1.0, offset))
    np.testing.assert_allclose(np.linalg.norm(fast.points - points, axis=1), fast.distances, atol=1e-12)
    corners = vertices[faces[fast.triangle_ids]]
    np.testing.assert_allclose(np.einsum("nk,nkd->nd", fast.barycentrics, corners), fast.points,
                               atol=1e-12 * max(1.0, offset))
    # the k-nearest-centroid path is exact too when it looks at every triangle
    every = TriangleMeshIndex(vertices, faces, k=len(faces)).query(points, exact=False)
    np.testing.assert_allclose(every.distances, slow.distances, atol=1e-12 * max(1.0, offset))


@pytest.mark.parametrize("num_faces", [1, 2, 3, 4, 5, 9, 33])
def test_exact_query_on_tiny_meshes(num_faces):
    rng = np.random.default_rng(num_faces)
    vertices = rng.normal(size=(3 * num_faces, 3))
    faces = np.arange(3 * num_faces).reshape(-1, 3)
    points = np.concatenate([rng.normal(size=(50, 3)), vertices])
    fast = closest_points_on_mesh(points, vertices, faces)
    np.testing.assert_allclose(fast.distances, closest_points_brute_force(points, vertices, faces).distances,
                               atol=1e-12)


def test_exact_query_on_a_scan_with_near_and_far_points():
    rng = np.random.default_rng(3)
    vertices, faces = height_field_scan(40)
    tri = rng.choice(len(faces), 500)
    on_surface = np.einsum("nk,nkd->nd", rng.dirichlet([1, 1, 1], 500), vertices[faces[tri]])
    points = np.concatenate([on_surface, on_surface + rng.normal(size=(500, 3)), rng.normal(size=(40, 3)) * 1000,
                             vertices[::7]])
    index = TriangleMeshIndex(vertices, faces)
    fast, slow = index.query(points), closest_points_brute_force(points, vertices, faces)
    np.testing.assert_allclose(fast.distances, slow.distances, atol=1e-12)
    assert (fast.distances[:500] < 1e-12).all()
    inexact = index.query(points, exact=False)  # the 8 nearest centroids: never nearer than the truth
    assert (inexact.distances >= slow.distances - 1e-12).all()
    assert np.isclose(inexact.distances[:1000], slow.distances[:1000], atol=1e-12).mean() > 0.99


def test_empty_query():
    vertices, faces = height_field_scan(5)
    index = TriangleMeshIndex(vertices, faces)
    for exact in (True, False):
        found = index.query(np.zeros((0, 3)), exact=exact)
        assert found.points.shape == (0, 3) and found.distances.shape == (0,)


@pytest.mark.parametrize("leaf_size", [2, 4, 7])
def test_box_tree_boxes_hold_their_triangles(leaf_size):
    rng = np.random.default_rng(4)
    vertices, faces = random_mesh_with_degenerate_triangles(rng)
    tree = triangle_kernels.build_box_tree(vertices[faces], leaf_size)
    assert sorted(tree.order) == list(range(len(faces)))
    np.testing.assert_array_equal(tree.corners, vertices[faces][tree.order])
    leaves = range(tree.first_leaf, 2 * tree.first_leaf)
    sizes = tree.end[tree.first_leaf:] - tree.start[tree.first_leaf:]
    assert (sizes >= 1).all() and (sizes <= leaf_size).all() and sizes.sum() == len(faces)
    for node in range(1, 2 * tree.first_leaf):
        corners = tree.corners[tree.start[node]:tree.end[node]].reshape(-1, 3)
        assert (tree.boxes[node, :3] <= corners).all() and (corners <= tree.boxes[node, 3:]).all()
        if node not in leaves:
            assert tree.start[2 * node] == tree.start[node] and tree.end[2 * node + 1] == tree.end[node]
    centroid_to_corner = np.linalg.norm(tree.corners - tree.spheres[:, None, :3], axis=-1)
    assert (centroid_to_corner <= tree.spheres[:, 3:] * (1 + 1e-15)).all()
    with pytest.raises(ValueError, match="leaf_size"):
        triangle_kernels.build_box_tree(vertices[faces], 1)


def test_kernels_compile_without_a_cache_location():
    # a function with no source file has nowhere to be cached: numba refuses cache=True, the fallback compiles
    namespace = {}
    exec("def double(x):\n    return 2 * x\n", namespace)
    double = triangle_kernels._compile()(namespace["double"])
    assert double(21) == 42


@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_numpy_procrustes_matches_torch(with_scale, weighted):
    rng = np.random.default_rng(5)
    source = rng.normal(size=(300, 3)) * [30, 20, 10]
    target = 1.3 * source @ np.linalg.qr(rng.normal(size=(3, 3)))[0] + rng.normal(size=300)[:, None] * 0.1 + 5
    weights = rng.uniform(size=300).round() if weighted else None
    rotation, translation, scale = _procrustes_np(source, target, weights, with_scale)
    reference = procrustes(torch.from_numpy(source)[None], torch.from_numpy(target)[None],
                           None if weights is None else torch.from_numpy(weights)[None], with_scale=with_scale)
    np.testing.assert_allclose(rotation, reference.rotation[0].numpy(), atol=1e-12)
    np.testing.assert_allclose(translation, reference.translation[0].numpy(), atol=1e-10)
    np.testing.assert_allclose(scale, float(reference.scale[0]), rtol=1e-12)
