"""The built-in rasterizer against the slow float64 reference, and its gradients, chunking and culling."""

from __future__ import annotations

import pytest
import torch

from diffface.camera import perspective_project, world_to_camera
from diffface.geometry import face_normals
from diffface.renderers.fragments import BACKGROUND_DEPTH, Fragments
from diffface.renderers.pytorch3d_backend import INSTALL_HINT, pytorch3d_available, select_backend
from diffface.renderers.rasterize import MeshRasterizer, RasterSettings, interpolate_attributes, rasterize_meshes
from diffface.renderers.rasterize_reference import (interpolate_attributes_reference, random_triangle_soup,
                                                    rasterize_meshes_reference, uv_sphere)

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def ambiguous_pixels(vertices: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int], edge_tol: float,
                     depth_tol: float = 1e-9, near: float = 1e-6) -> torch.Tensor:
    """Pixels where two rasterizers may rightly differ: the centre within ``edge_tol`` pixels of an
    edge of a drawable triangle, or two covering faces within ``depth_tol`` (relative) in depth.

    Shape:
        vertices: (B, V, 3); faces: (F, 3) -> (B, H, W) bool.
    """
    height, width = image_size
    tri = vertices.double()[:, faces]  # (B, F, 3, 3)
    drawable = (tri[..., 2] > near).all(-1)
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                                indexing="ij")
    p = torch.stack([cols, rows], -1).reshape(1, 1, -1, 2)  # (1, 1, P, 2)
    near_edge = torch.zeros(tri.shape[0], height * width, dtype=torch.bool)
    for k in range(3):  # distance from each pixel centre to each edge segment
        a, b = tri[:, :, k, None, :2], tri[:, :, (k + 1) % 3, None, :2]
        t = (((p - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1).clamp_min(1e-300)).clamp(0, 1)
        dist = (p - (a + t[..., None] * (b - a))).norm(dim=-1)  # (B, F, P)
        near_edge |= ((dist < edge_tol) & drawable[..., None]).any(1)
    # depth ties: every covering face's depth at each pixel centre
    a0, a1, a2 = tri[:, :, 0, None, :2], tri[:, :, 1, None, :2], tri[:, :, 2, None, :2]

    def cross(u, v):
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    area = cross(a1 - a0, a2 - a0)
    bary = torch.stack([cross(a1 - p, a2 - p), cross(a2 - p, a0 - p), cross(a0 - p, a1 - p)], -1) / area[..., None]
    inside = (bary >= 0).all(-1) & drawable[..., None] & (area != 0)
    depth = 1 / (bary / tri[:, :, None, :, 2]).sum(-1)
    depth = torch.where(inside, depth, torch.inf).sort(1).values  # (B, F, P), nearest first
    tie = (depth[:, 1] - depth[:, 0] <= depth_tol * depth[:, 0].abs()) & torch.isfinite(depth[:, 1])
    return (near_edge | tie).view(-1, height, width)


def assert_matches_reference(out: Fragments, ref: Fragments, ambiguous: torch.Tensor, bary_tol: float,
                             depth_tol: float) -> None:
    differ = out.pix_to_face.cpu() != ref.pix_to_face
    assert not (differ & ~ambiguous).any(), f"{int((differ & ~ambiguous).sum())} unambiguous pixels differ"
    same = ~differ & ref.mask
    torch.testing.assert_close(out.bary_coords.cpu().double()[same], ref.bary_coords[same], atol=bary_tol, rtol=0)
    torch.testing.assert_close(out.zbuf.cpu().double()[same], ref.zbuf[same], atol=depth_tol, rtol=depth_tol)
    assert torch.equal(out.mask.cpu(), out.pix_to_face.cpu() >= 0)
    background = ~out.mask.cpu()
    assert (out.bary_coords.cpu()[background] == 0).all()
    assert (out.zbuf.cpu()[background] == BACKGROUND_DEPTH).all()


def one_triangle(z: float = 2.0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    vertices = torch.tensor([[[1.0, 1.0, z], [6.0, 1.0, z], [1.0, 6.0, z]]], dtype=dtype)
    return vertices, torch.tensor([[0, 1, 2]])


# ----------------------------------------------------------------------------------------------
# smoke, shapes, known values
# ----------------------------------------------------------------------------------------------


def test_single_triangle_known_pixels():
    vertices, faces = one_triangle()
    frags = rasterize_meshes(vertices, faces, (8, 9))
    assert frags.pix_to_face.shape == (1, 8, 9) and frags.pix_to_face.dtype == torch.long
    assert frags.bary_coords.shape == (1, 8, 9, 3) and frags.zbuf.shape == (1, 8, 9) and frags.mask.dtype == torch.bool
    assert frags.image_size == (8, 9)
    # covered pixel centres: i, j >= 1 and i + j <= 7 (edges included)
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(9), indexing="ij")
    expected = (rows >= 1) & (cols >= 1) & (rows + cols <= 7)
    assert torch.equal(frags.mask[0], expected)
    assert torch.equal(frags.pix_to_face[0], torch.where(expected, 0, -1))
    # pixel (row 2, col 3) = (u 3, v 2): screen barycentrics (0.2, 0.4, 0.2) -> weights of v0, v1, v2
    torch.testing.assert_close(frags.bary_coords[0, 2, 3], torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))
    assert (frags.zbuf[0][expected] == 2.0).all()


def test_perspective_correct_barycentrics_and_depth():
    # v1 twice as deep as v0, v2: halfway along the screen edge v0-v1, the surface point is a third
    # of the way in camera space, and its depth is the harmonic blend 1 / (0.5/1 + 0.5/2) = 4/3.
    vertices = torch.tensor([[[0.0, 0.0, 1.0], [8.0, 0.0, 2.0], [0.0, 8.0, 1.0]]], dtype=torch.float64)
    frags = rasterize_meshes(vertices, torch.tensor([[0, 1, 2]]), (9, 9))
    torch.testing.assert_close(frags.bary_coords[0, 0, 4], torch.tensor([2 / 3, 1 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(frags.zbuf[0, 0, 4], torch.tensor(4 / 3, dtype=torch.float64))


def test_module_matches_function_and_settings():
    vertices, faces = random_triangle_soup(2, 6, (12, 16), torch.Generator().manual_seed(1))
    settings = RasterSettings(image_size=(12, 16), max_pairs_per_chunk=5)
    out = MeshRasterizer(settings)(vertices, faces)
    ref = rasterize_meshes(vertices, faces, (12, 16))
    assert torch.equal(out.pix_to_face, ref.pix_to_face) and torch.equal(out.bary_coords, ref.bary_coords)
    assert MeshRasterizer(10).settings.image_size == 10
    assert "image_size" in repr(MeshRasterizer(settings))


# ----------------------------------------------------------------------------------------------
# against the reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_float64(seed):
    g = torch.Generator().manual_seed(seed)
    size = [(13, 17), (20, 11), (16, 16)][seed % 3]
    vertices, faces = random_triangle_soup(3, 14, size, g, scale_range=(0.7, 12.0))
    out = rasterize_meshes(vertices, faces, size)
    ref = rasterize_meshes_reference(vertices, faces, size)
    ambiguous = ambiguous_pixels(vertices, faces, size, edge_tol=1e-6)
    assert ambiguous.float().mean() < 0.05
    assert ref.mask.any(-1).any(-1).all(), "every image should show something"
    assert_matches_reference(out, ref, ambiguous, bary_tol=1e-9, depth_tol=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_float32(seed):
    g = torch.Generator().manual_seed(100 + seed)
    size = (18, 23)
    vertices, faces = random_triangle_soup(2, 16, size, g, scale_range=(1.0, 15.0))
    out = rasterize_meshes(vertices.float(), faces, size)
    ref = rasterize_meshes_reference(vertices.float(), faces, size)
    assert out.bary_coords.dtype == torch.float32
    # float32 inputs put an edge within ~1e-4 px of where float64 puts it
    ambiguous = ambiguous_pixels(vertices.float(), faces, size, edge_tol=1e-3, depth_tol=1e-6)
    assert_matches_reference(out, ref, ambiguous, bary_tol=1e-5, depth_tol=1e-5)


def test_matches_reference_on_projected_sphere():
    vertices, faces = uv_sphere(7, 9, dtype=torch.float64)
    angles = torch.tensor([[0.3, -0.5, 0.2], [-0.2, 0.9, 0.0]], dtype=torch.float64)
    uv, depth = perspective_project(vertices.expand(2, -1, -1) * 10, angles,
                                    torch.tensor([[0.5, -0.3, 30.0], [0.0, 0.0, 25.0]], dtype=torch.float64),
                                    torch.tensor([[28.0], [25.0]], dtype=torch.float64),
                                    torch.tensor([[11.0, 9.5], [10.0, 10.0]], dtype=torch.float64))
    screen = torch.cat([uv, depth[..., None]], -1)
    out = rasterize_meshes(screen, faces, (20, 22))
    ref = rasterize_meshes_reference(screen, faces, (20, 22))
    ambiguous = ambiguous_pixels(screen, faces, (20, 22), edge_tol=1e-6)
    assert ref.mask.float().mean() > 0.3
    assert_matches_reference(out, ref, ambiguous, bary_tol=1e-9, depth_tol=1e-9)


def test_large_and_mid_size_triangles_match_reference():
    # boxes over 8 px go through the exact pair lists, 5-8 px through the padded windows
    g = torch.Generator().manual_seed(7)
    for scale_range in [(3.0, 4.0), (20.0, 40.0)]:
        vertices, faces = random_triangle_soup(1, 6, (21, 19), g, scale_range=scale_range)
        out = rasterize_meshes(vertices, faces, (21, 19))
        ref = rasterize_meshes_reference(vertices, faces, (21, 19))
        assert_matches_reference(out, ref, ambiguous_pixels(vertices, faces, (21, 19), 1e-6), 1e-9, 1e-9)


def test_batch_elements_are_independent():
    vertices, faces = random_triangle_soup(4, 10, (15, 15), torch.Generator().manual_seed(3))
    batched = rasterize_meshes(vertices, faces, 15)
    for b in range(4):
        single = rasterize_meshes(vertices[b:b + 1], faces, 15)
        assert torch.equal(batched.pix_to_face[b], single.pix_to_face[0])
        assert torch.equal(batched.bary_coords[b], single.bary_coords[0])
    assert not torch.equal(batched.pix_to_face[0], batched.pix_to_face[1])


def test_interpolate_matches_reference():
    g = torch.Generator().manual_seed(5)
    vertices, faces = random_triangle_soup(2, 8, (12, 14), g, scale_range=(2.0, 8.0))
    attributes = torch.randn(2, vertices.shape[1], 4, generator=g, dtype=torch.float64)
    frags = rasterize_meshes(vertices, faces, (12, 14))
    out = interpolate_attributes(frags, faces, attributes)
    assert out.shape == (2, 12, 14, 4)
    torch.testing.assert_close(out, interpolate_attributes_reference(frags, faces, attributes))
    assert (out[~frags.mask] == 0).all()
    # perspective-correct barycentrics blend camera-space points: the blend of (u·z, v·z) (camera
    # x, y up to the intrinsics) over the depth is the pixel centre again
    uv = interpolate_attributes(frags, faces, vertices[..., :2] * vertices[..., 2:]) / frags.zbuf[..., None]
    rows, cols = torch.meshgrid(torch.arange(12.0, dtype=torch.float64), torch.arange(14.0, dtype=torch.float64),
                                indexing="ij")
    torch.testing.assert_close(uv[frags.mask], torch.stack([cols, rows], -1).expand(2, -1, -1, -1)[frags.mask])


# ----------------------------------------------------------------------------------------------
# tie rule, chunking, culling, robustness
# ----------------------------------------------------------------------------------------------


def test_shared_edge_through_pixel_centres_has_no_cracks_and_goes_to_smaller_face():
    # a square split along its diagonal, which passes exactly through pixel centres (i, i)
    vertices = torch.tensor([[[0.0, 0.0, 3.0], [6.0, 0.0, 3.0], [6.0, 6.0, 3.0], [0.0, 6.0, 3.0]]])
    for faces in (torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.tensor([[0, 2, 3], [0, 1, 2]])):
        frags = rasterize_meshes(vertices, faces, 7)
        assert frags.mask[0].all()
        diagonal = frags.pix_to_face[0].diagonal()
        assert (diagonal == 0).all()  # both faces cover it at the same depth: the smaller index wins
        ref = rasterize_meshes_reference(vertices, faces, 7)
        assert torch.equal(frags.pix_to_face, ref.pix_to_face)


def test_nearest_face_wins_regardless_of_order():
    near_tri = [[0.0, 0.0, 2.0], [9.0, 0.0, 2.0], [0.0, 9.0, 2.0]]
    far_tri = [[0.0, 0.0, 5.0], [9.0, 0.0, 5.0], [0.0, 9.0, 5.0]]
    for order, winner in (((near_tri, far_tri), 0), ((far_tri, near_tri), 1)):
        vertices = torch.tensor([order[0] + order[1]])
        frags = rasterize_meshes(vertices, torch.tensor([[0, 1, 2], [3, 4, 5]]), 10)
        assert (frags.pix_to_face[frags.mask] == winner).all()
        assert (frags.zbuf[frags.mask] == 2.0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunking_gives_identical_results(dtype):
    g = torch.Generator().manual_seed(11)
    vertices, faces = random_triangle_soup(3, 40, (24, 30), g, scale_range=(0.5, 30.0), dtype=dtype)
    full = rasterize_meshes(vertices, faces, (24, 30))
    for max_pairs in (1, 3, 17, 256, 5000):
        chunked = rasterize_meshes(vertices, faces, (24, 30), max_pairs_per_chunk=max_pairs)
        assert torch.equal(chunked.pix_to_face, full.pix_to_face), max_pairs
        assert torch.equal(chunked.bary_coords, full.bary_coords), max_pairs
        assert torch.equal(chunked.zbuf, full.zbuf), max_pairs


def test_known_visible_faces_give_the_same_fragments_and_gradients():
    """``pix_to_face`` from an earlier call skips the search: the same fragments, the same vertex gradients, also
    when the batch is rasterized in groups; a map of the wrong shape is refused."""
    g = torch.Generator().manual_seed(12)
    vertices, faces = random_triangle_soup(3, 40, (24, 30), g, scale_range=(0.5, 30.0), dtype=torch.float64)
    full = rasterize_meshes(vertices, faces, (24, 30))
    weights = torch.randn(3, 24, 30, 3, dtype=torch.float64, generator=g)
    for max_pairs in (1 << 22, 17):  # one group; one image per group
        leaves = [vertices.clone().requires_grad_(True) for _ in range(2)]
        searched = rasterize_meshes(leaves[0], faces, (24, 30), max_pairs_per_chunk=max_pairs)
        known = rasterize_meshes(leaves[1], faces, (24, 30), max_pairs_per_chunk=max_pairs,
                                 pix_to_face=full.pix_to_face)
        for out in (searched, known):
            assert torch.equal(out.pix_to_face, full.pix_to_face) and torch.equal(out.mask, full.mask)
            assert torch.equal(out.bary_coords, full.bary_coords) and torch.equal(out.zbuf, full.zbuf)
            ((out.bary_coords * weights).sum() + out.zbuf.clamp_max(1e3).sum()).backward()
        assert leaves[1].grad.abs().sum() > 0
        assert torch.equal(leaves[0].grad, leaves[1].grad)
    with pytest.raises(ValueError, match="pix_to_face"):
        rasterize_meshes(vertices, faces, (24, 30), pix_to_face=full.pix_to_face[:, :10])


def test_triangles_at_or_behind_the_camera_plane_are_culled():
    vertices, faces = one_triangle()
    for bad_z in (0.0, -1.0, 1e-7):
        behind = vertices.clone()
        behind[0, 1, 2] = bad_z
        assert not rasterize_meshes(behind, faces, 8).mask.any(), bad_z
        assert not rasterize_meshes_reference(behind, faces, 8).mask.any()
    assert not rasterize_meshes(vertices, faces, 8, near=2.0).mask.any()
    assert rasterize_meshes(vertices, faces, 8, near=1.9).mask.any()
    # a culled triangle in front must not hide the one behind it
    front = torch.tensor([[[0.0, 0.0, 1.0], [9.0, 0.0, 1.0], [0.0, 9.0, -1.0]]])
    frags = rasterize_meshes(torch.cat([front, vertices], 1), torch.tensor([[0, 1, 2], [3, 4, 5]]), 8)
    assert (frags.pix_to_face[frags.mask] == 1).all() and frags.mask.any()


def test_degenerate_and_non_finite_triangles_are_never_drawn():
    vertices = torch.tensor([[[1.0, 1.0, 2.0], [5.0, 5.0, 2.0], [3.0, 3.0, 2.0],  # collinear
                              [1.0, 1.0, float("nan")], [6.0, 1.0, 2.0], [1.0, 6.0, 2.0],
                              [1.0, 1.0, 2.0], [float("inf"), 1.0, 2.0], [1.0, 6.0, 2.0]]])
    frags = rasterize_meshes(vertices, torch.arange(9).view(3, 3), 8)
    assert not frags.mask.any()


def test_offscreen_and_huge_triangles():
    vertices = torch.tensor([[[-1e4, -1e4, 5.0], [1e4, -1e4, 5.0], [0.0, 1e4, 5.0],  # covers everything
                              [50.0, 50.0, 1.0], [60.0, 50.0, 1.0], [50.0, 60.0, 1.0]]])  # off-screen
    frags = rasterize_meshes(vertices, torch.arange(6).view(2, 3), (5, 7))
    assert (frags.pix_to_face == 0).all()
    torch.testing.assert_close(frags.zbuf, torch.full((1, 5, 7), 5.0))


def test_backface_culling_matches_face_normals():
    # a sphere in front of the camera: faces whose camera-space normal (v1-v0)x(v2-v0) points away
    # from the camera are exactly the ones cull_backfaces drops; the z-buffer never shows them.
    vertices, faces = uv_sphere(10, 14, dtype=torch.float64)
    angles, translation = torch.tensor([[0.2, 0.4, 0.1]], dtype=torch.float64), torch.tensor([[0.0, 0.0, 5.0]],
                                                                                                dtype=torch.float64)
    focal, centre = torch.tensor([[40.0]], dtype=torch.float64), torch.tensor([[15.5, 15.5]], dtype=torch.float64)
    uv, depth = perspective_project(vertices[None], angles, translation, focal, centre)
    screen = torch.cat([uv, depth[..., None]], -1)
    camera = world_to_camera(vertices[None], angles, translation)
    normals = face_normals(camera, faces)[0]
    facing_away = (normals * camera[0][faces[:, 0]]).sum(-1) > 0
    frags = rasterize_meshes(screen, faces, 32)
    culled = rasterize_meshes(screen, faces, 32, cull_backfaces=True)
    assert not facing_away[frags.pix_to_face[frags.mask]].any()
    assert not facing_away[culled.pix_to_face[culled.mask]].any()
    assert (frags.pix_to_face != culled.pix_to_face).float().mean() < 0.01  # only at silhouettes, if at all
    ref_culled = rasterize_meshes_reference(screen, faces, 32, cull_backfaces=True)
    assert_matches_reference(culled, ref_culled, ambiguous_pixels(screen, faces, (32, 32), 1e-6), 1e-9, 1e-9)
    # a lone back face disappears with culling, a lone front face stays
    vertices2, faces2 = one_triangle()
    assert rasterize_meshes(vertices2, faces2, 8, cull_backfaces=True).mask.any() != \
        rasterize_meshes(vertices2, faces2[:, [0, 2, 1]], 8, cull_backfaces=True).mask.any()


def test_half_precision_input_gives_float32():
    vertices, faces = one_triangle(dtype=torch.float16)
    frags = rasterize_meshes(vertices, faces, 8)
    assert frags.bary_coords.dtype == torch.float32 and frags.mask.sum() == 21


def test_empty_scene():
    vertices, faces = one_triangle()
    frags = rasterize_meshes(vertices, faces[:0], 8)
    assert not frags.mask.any() and (frags.pix_to_face == -1).all()


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_tensor():
    vertices, faces = one_triangle()
    with pytest.raises(ValueError, match="vertices_screen"):
        rasterize_meshes(vertices[..., :2], faces, 8)
    with pytest.raises(ValueError, match="vertices_screen"):
        rasterize_meshes(vertices[0], faces, 8)
    with pytest.raises(ValueError, match="faces"):
        rasterize_meshes(vertices, faces.view(1, 3, 1), 8)
    with pytest.raises(TypeError, match="faces"):
        rasterize_meshes(vertices, faces.float(), 8)
    with pytest.raises(TypeError, match="vertices_screen"):
        rasterize_meshes(vertices.long(), faces, 8)
    with pytest.raises(ValueError, match="faces"):
        rasterize_meshes(vertices, faces + 1, 8)
    with pytest.raises(ValueError, match="image_size"):
        rasterize_meshes(vertices, faces, (8, 0))
    with pytest.raises(ValueError, match="image_size"):
        rasterize_meshes(vertices, faces, (8, 8, 3))
    with pytest.raises(ValueError, match="max_pairs_per_chunk"):
        rasterize_meshes(vertices, faces, 8, max_pairs_per_chunk=0)
    frags = rasterize_meshes(vertices, faces, 8)
    with pytest.raises(ValueError, match="attributes"):
        interpolate_attributes(frags, faces, torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="image_size"):
        MeshRasterizer(RasterSettings(image_size=-3))


# ----------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------


def _gradcheck_scene():
    # two overlapping tilted triangles; no pixel centre within 1e-2 px of an edge, so a 1e-6
    # perturbation never changes pix_to_face
    vertices = torch.tensor([[[0.3, 0.4, 2.0], [7.6, 1.3, 2.5], [1.2, 6.7, 3.0],
                              [2.3, 2.2, 1.5], [6.7, 4.4, 4.0], [3.5, 6.6, 2.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    assert not ambiguous_pixels(vertices, faces, (8, 8), edge_tol=1e-2, depth_tol=1e-3).any()
    return vertices, faces


def test_gradcheck_barycentrics_depth_and_interpolation():
    vertices, faces = _gradcheck_scene()
    frozen = rasterize_meshes(vertices, faces, 8).pix_to_face
    attributes = torch.randn(1, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def render(v, a):
        frags = rasterize_meshes(v, faces, 8)
        assert torch.equal(frags.pix_to_face, frozen)
        return frags.bary_coords, frags.zbuf, interpolate_attributes(frags, faces, a)

    assert torch.autograd.gradcheck(render, (vertices.clone().requires_grad_(), attributes.requires_grad_()))


def test_gradients_flow_to_vertices(device):
    vertices, faces = _gradcheck_scene()
    vertices = vertices.float().to(device).requires_grad_()
    frags = rasterize_meshes(vertices, faces.to(device), 8)
    (frags.bary_coords.sum() + frags.zbuf[frags.mask].sum()).backward()
    assert vertices.grad is not None and torch.isfinite(vertices.grad).all()
    assert vertices.grad[..., 2].abs().sum() > 0  # depth reaches z
    # moving a fronto-parallel triangle back by 1 moves its depth by 1: d zbuf / d z = 1 summed
    flat, faces1 = one_triangle(dtype=torch.float64)
    flat = flat.to(device).requires_grad_()
    zbuf = rasterize_meshes(flat, faces1.to(device), 8).zbuf
    zbuf[0, 3, 2].backward()
    torch.testing.assert_close(flat.grad[0, :, 2].sum().cpu(), torch.tensor(1.0, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# devices and backends
# ----------------------------------------------------------------------------------------------


def test_devices_agree_with_cpu(device):
    g = torch.Generator().manual_seed(21)
    vertices, faces = random_triangle_soup(2, 30, (20, 26), g, scale_range=(0.5, 20.0), dtype=torch.float32)
    cpu = rasterize_meshes(vertices, faces, (20, 26))
    out = rasterize_meshes(vertices.to(device), faces.to(device), (20, 26))
    assert out.pix_to_face.device.type == device.type
    ambiguous = ambiguous_pixels(vertices, faces, (20, 26), edge_tol=1e-3, depth_tol=1e-6)
    assert not ((out.pix_to_face.cpu() != cpu.pix_to_face) & ~ambiguous).any()
    same = out.pix_to_face.cpu() == cpu.pix_to_face
    torch.testing.assert_close(out.bary_coords.cpu()[same], cpu.bary_coords[same], atol=1e-5, rtol=0)


@pytest.mark.cuda
def test_faces_on_another_device_is_an_error():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    vertices, faces = one_triangle()
    with pytest.raises(ValueError, match="faces"):
        rasterize_meshes(vertices.cuda(), faces, 8)


def test_select_backend():
    from diffface.renderers.pytorch3d_backend import PyTorch3DRasterizer, make_rasterizer

    assert select_backend("builtin") is rasterize_meshes
    assert select_backend("auto") is rasterize_meshes
    assert select_backend("auto", device="cpu") is rasterize_meshes
    assert isinstance(make_rasterizer(RasterSettings(8), "builtin"), MeshRasterizer)
    with pytest.raises(ValueError, match="backend"):
        select_backend("opengl")
    if pytorch3d_available():
        assert isinstance(make_rasterizer(8, "pytorch3d"), PyTorch3DRasterizer)
    else:
        with pytest.raises(ImportError, match=r"pip install pipablepytorch3d==0\.7\.6"):
            select_backend("pytorch3d")
        vertices, faces = one_triangle()
        with pytest.raises(ImportError, match="torch 2.2"):
            PyTorch3DRasterizer(8)(vertices, faces)
    assert "Python 3.11" in INSTALL_HINT
