"""Batched differentiable mesh rasterization in pure PyTorch (CPU and CUDA), and attribute interpolation.

The two nvdiffrast-style primitives: :func:`rasterize_meshes` (which face is visible at each pixel
and where) and :func:`interpolate_attributes` (blend per-vertex values with the barycentrics).

Conventions
-----------
* Input vertices are in screen space: ``(u, v, z)`` with ``(u, v)`` the pixel coordinates of
  :func:`diffface.camera.project_points` and ``z`` the camera depth. Pixel ``(i, j)`` (row ``i``,
  column ``j``) is sampled at its centre ``(u, v) = (j, i)``.
* Inside test: a pixel centre belongs to a triangle when none of its three screen-space
  barycentrics is negative. A centre exactly on an edge belongs to every triangle sharing that
  edge (no cracks); the z-buffer then keeps the nearest, and among faces at the same depth the
  smallest face index (ties are deterministic, on CPU and CUDA alike).
* Culling: a triangle with a vertex at ``z <= near`` (at or behind the camera plane), a
  non-finite coordinate or zero screen area is never drawn. With ``cull_backfaces`` a triangle
  whose normal ``(v1 - v0) × (v2 - v0)`` (camera space) points away from the camera is dropped:
  in pixel coordinates (y down) those have positive signed area.
* Barycentrics are perspective-correct: the screen-space weights ``b_i`` divided by ``z_i`` and
  renormalised (PyTorch3D's ``perspective_correct=True``); the depth is ``1 / Σ b_i / z_i``, the
  camera ``z`` of the surface point seen through the pixel centre.

How it is fast
--------------
No loop over faces or pixels. Visibility is found without autograd: every triangle that can hold
a pixel centre enumerates the pixel centres in its bounding box as (triangle, pixel) pairs. Small
triangles (the common case for a face mesh) are grouped by bounding-box size and enumerate a
fixed window with one broadcast matmul of per-triangle affine coefficients (edge functions and
inverse depth are affine in the pixel position); large ones enumerate their exact pixel lists.
Pairs are processed in chunks of at most ``max_pairs_per_chunk`` and images in groups, so memory
stays bounded. The z-buffer is one ``scatter_reduce(amin)`` of an ``int64`` key that packs the
depth (as the bits of the float32 inverse depth) above the face index, so the nearest face and the
smallest-index tie break come out of a single pass; float64 inputs use two exact passes instead.
Then, with autograd, the barycentrics and depth of the chosen face are recomputed at each covered
pixel, so gradients reach the vertex positions (and, through :func:`interpolate_attributes`, the
attributes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from diffface.checks import check_shape

from .fragments import BACKGROUND_DEPTH, Fragments

_EMPTY_KEY = torch.iinfo(torch.int64).max
_FLOAT32_MAX_BITS = 0x7F7FFFFF  # bits of the largest finite float32
# Window sides of the small-triangle classes: a triangle whose pixel-centre bounding box is
# n wide goes to the first class with side >= n. Sides 1..4 are exact (no wasted pairs).
_WINDOW_SIDES = (1, 2, 3, 4, 6, 8)


@dataclass(frozen=True)
class RasterSettings:
    """Settings of :class:`MeshRasterizer`.

    Args:
        image_size: ``(H, W)`` in pixels, or one int for a square image.
        cull_backfaces: drop triangles facing away from the camera (default off).
        max_pairs_per_chunk: bound on the (triangle, pixel) candidate pairs processed at once; the
            peak memory of the visibility pass is about 60 bytes times this. Results do not depend on it.
        near: triangles with a vertex at camera depth ``z <= near`` are culled (same unit as ``z``).
    """

    image_size: int | tuple[int, int]
    cull_backfaces: bool = False
    max_pairs_per_chunk: int = 1 << 22
    near: float = 1e-6


def _image_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        height = width = image_size
    else:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        height, width = (int(s) for s in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def _check_inputs(vertices_screen: torch.Tensor, faces: torch.Tensor) -> None:
    check_shape(vertices_screen, ["B", "V", 3], "vertices_screen")
    check_shape(faces, ["F", 3], "faces")
    if not vertices_screen.is_floating_point():
        raise TypeError(f"vertices_screen must be a floating-point tensor, got {vertices_screen.dtype}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces must be an integer tensor (int32 or int64), got {faces.dtype}")
    if faces.device != vertices_screen.device:
        raise ValueError(f"faces is on {faces.device} but vertices_screen is on {vertices_screen.device}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices_screen.shape[1]):
        raise ValueError(f"faces holds vertex indices outside [0, {vertices_screen.shape[1]}) "
                         f"(min {int(faces.min())}, max {int(faces.max())})")


# ----------------------------------------------------------------------------------------------
# Visibility (no autograd)
# ----------------------------------------------------------------------------------------------

@dataclass
class _Triangles:
    """Triangles of an image group whose bounding box holds a pixel centre, sorted by window class.

    ``coef[r, :, t] = (c0, cx, cy)`` gives quantity ``r`` of ``(e0, e1, e2, 1/z)`` (the edge
    functions, i.e. the screen barycentrics times twice the absolute area, and the inverse depth)
    at pixel ``(col0 + dx, row0 + dy)`` of triangle ``t`` as ``c0 + cx·dx + cy·dy``. Culled
    triangles (zero area, non-finite, back-facing when asked) get ``e0 = -1`` everywhere, so they
    never cover a pixel.

    Shape:
        coef: (4, 3, T); face, base, nx, ny: (T,) long (face index, flat index of the pixel
        ``(row0, col0)`` in the group's pixel buffer, window width and height).
        classes: ``(window_width, window_height, start, stop)`` slices of T; window 0 is "large".
    """

    coef: torch.Tensor
    face: torch.Tensor
    base: torch.Tensor
    nx: torch.Tensor
    ny: torch.Tensor
    classes: list[tuple[int, int, int, int]]


def _setup_triangles(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, near: float,
                     cull_backfaces: bool) -> _Triangles:
    """Bound, cull, classify and set up the triangles of a group of images.

    Shape:
        verts: (G, V, 3) screen-space (u, v, z); faces: (F, 3) long -> :class:`_Triangles` with T <= G·F.
    """
    num_images, num_vertices = verts.shape[:2]
    num_faces = faces.shape[0]
    # Corners laid out as (corner, face, coordinate, image): one row gather of each vertex, and
    # the bounding-box ops below run on (face, image) planes.
    corners = verts.permute(1, 2, 0).contiguous().index_select(0, faces.t().reshape(-1))
    corners = corners.view(3, num_faces, 3, num_images)
    x, y, z = corners.unbind(2)  # (3 corners, F, G) each
    col0 = torch.minimum(torch.minimum(x[0], x[1]), x[2]).ceil_().clamp_(min=0)
    col1 = torch.maximum(torch.maximum(x[0], x[1]), x[2]).floor_().clamp_(max=width - 1)
    row0 = torch.minimum(torch.minimum(y[0], y[1]), y[2]).ceil_().clamp_(min=0)
    row1 = torch.maximum(torch.maximum(y[0], y[1]), y[2]).floor_().clamp_(max=height - 1)
    keep = (col1 >= col0) & (row1 >= row0) & (z[0] > near) & (z[1] > near) & (z[2] > near)  # NaN fails all
    flat = keep.view(-1).nonzero().squeeze(1)  # face * G + image; usually a fraction of G·F

    # Window classes: small boxes by (width class, height class), large ones in class 0.
    nx = (col1.view(-1).index_select(0, flat) - col0.view(-1).index_select(0, flat)).long() + 1
    ny = (row1.view(-1).index_select(0, flat) - row0.view(-1).index_select(0, flat)).long() + 1
    n_sides, largest = len(_WINDOW_SIDES), _WINDOW_SIDES[-1]
    side_class = torch.tensor([0] + [sum(s < n for s in _WINDOW_SIDES) for n in range(1, largest + 1)] + [-1],
                              dtype=torch.int16, device=flat.device)
    class_x = side_class.index_select(0, nx.clamp(max=largest + 1))
    class_y = side_class.index_select(0, ny.clamp(max=largest + 1))
    cls = torch.where((class_x < 0) | (class_y < 0), 0, 1 + class_x * n_sides + class_y)
    order = torch.argsort(cls.to(torch.uint8))  # sorting uint8 keys is several times faster than int64
    counts = torch.bincount(cls, minlength=1 + n_sides * n_sides).tolist()
    flat, nx, ny = flat.index_select(0, order), nx.index_select(0, order), ny.index_select(0, order)
    classes, start = [], 0
    for c, count in enumerate(counts):
        if count:
            kx, ky = (0, 0) if c == 0 else (_WINDOW_SIDES[(c - 1) // n_sides], _WINDOW_SIDES[(c - 1) % n_sides])
            classes.append((kx, ky, start, start + count))
            start += count

    face = torch.div(flat, num_images, rounding_mode="floor")
    image = flat - face * num_images
    col0, row0 = col0.view(-1).index_select(0, flat), row0.view(-1).index_select(0, flat)
    # corners[k, f, c, g] of the kept triangles, one 1-D gather per (coordinate, corner)
    corners, first = corners.view(-1), face * (3 * num_images) + image
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = (
        [corners.index_select(0, first + (k * num_faces * 3 + c) * num_images) for k in range(3)] for c in range(3))

    area2 = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    valid = torch.isfinite(area2) & (area2 != 0) & torch.isfinite(z0 + z1 + z2)
    if cull_backfaces:
        valid &= area2 < 0
    # Edge function of the edge opposite vertex i (from vertex j to k), signed so that it is
    # non-negative inside (b_i times twice the absolute area), as c0 + cx·dx + cy·dy around the
    # window origin (col0, row0). Not normalised, so it is exact for exactly representable
    # inputs (a shared edge through pixel centres is tested alike from both sides), and all terms
    # stay small, so float32 is precise. Written in place into the table (the setup is memory-bound).
    sign = torch.sign(area2)
    coef = x0.new_empty(4, 3, x0.shape[0])
    for i, ((xj, yj), (xk, yk)) in enumerate((((x1, y1), (x2, y2)), ((x2, y2), (x0, y0)), ((x0, y0), (x1, y1)))):
        c0, cx, cy = coef[i]
        torch.mul(xk - xj, sign, out=cy)
        torch.mul(yj - yk, sign, out=cx)
        torch.mul(cy, row0 - yj, out=c0).addcmul_(cx, col0 - xj)
    # 1/z is affine on screen: Σ b_i / z_i with b_i = edge_i / |twice the area|.
    inv_area = 1.0 / area2.abs()
    torch.mul(coef[0], inv_area / z0, out=coef[3]).addcmul_(coef[1], inv_area / z1).addcmul_(coef[2], inv_area / z2)
    invalid = ~valid
    coef[0, 0].masked_fill_(invalid, -1.0)  # e0 = -1 everywhere: never inside
    coef[0, 1:].masked_fill_(invalid, 0.0)
    base = image * (height * width) + row0.long() * width + col0.long()
    return _Triangles(coef, face, base, nx, ny, classes)


_PairChunk = tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def _iter_pairs(triangles: _Triangles, width: int, max_pairs: int) -> Iterator[_PairChunk]:
    """Enumerate (triangle, pixel) pairs of the triangles' windows in chunks of at most ``max_pairs``.

    Yields:
        ``(pixel, inv_depth, inside, per_pair)``: flat pixel index in the group's buffer, inverse
        depth at the pixel centre and whether the centre is inside, all of one shape, and a function
        taking a per-triangle tensor (T,) to one value per pair (broadcastable to that shape).
        Pairs that are not inside carry an in-image pixel index but meaningless depths.
    """
    device, dtype = triangles.coef.device, triangles.coef.dtype
    for kx, ky, start, stop in triangles.classes:
        if kx == 0:
            yield from _iter_large(triangles, start, stop, width, max_pairs)
            continue
        exact = kx <= 4 and ky <= 4  # sides 1..4 are classes of one size: every window is exact
        dy, dx = torch.meshgrid(torch.arange(ky, device=device), torch.arange(kx, device=device), indexing="ij")
        dx, dy = dx.reshape(-1, 1), dy.reshape(-1, 1)
        basis = torch.cat([torch.ones_like(dx), dx, dy], 1).to(dtype)  # (K, 3)
        offset = dy * width + dx  # (K, 1)
        step = max(1, max_pairs // (kx * ky))
        for s in range(start, stop, step):
            chunk = slice(s, min(s + step, stop))
            values = basis @ triangles.coef[:, :, chunk]  # (4, K, T)
            inside = values[:3].amin(0) >= 0
            pixel = triangles.base[None, chunk] + offset
            if not exact:
                inside &= (dx < triangles.nx[None, chunk]) & (dy < triangles.ny[None, chunk])
                # pairs outside the window may point past the image: send them to its first pixel
                pixel = torch.where(inside, pixel, triangles.base[None, chunk])
            yield pixel, values[3], inside, lambda per_triangle, chunk=chunk: per_triangle[None, chunk]


def _iter_large(triangles: _Triangles, start: int, stop: int, width: int, max_pairs: int) -> Iterator[_PairChunk]:
    """Exact pixel lists of the large triangles ``start:stop`` (windows over the small classes), chunked."""
    counts = triangles.nx[start:stop] * triangles.ny[start:stop]
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1])
    for s in range(0, total, max_pairs):
        pair = torch.arange(s, min(s + max_pairs, total), device=counts.device)
        local_triangle = torch.searchsorted(ends, pair, right=True)
        local = pair - (ends - counts).index_select(0, local_triangle)
        triangle = local_triangle + start
        nx = triangles.nx.index_select(0, triangle)
        dy = torch.div(local, nx, rounding_mode="floor")
        dx = local - dy * nx
        coef = triangles.coef.index_select(2, triangle)  # (4, 3, N)
        values = coef[:, 0] + coef[:, 1] * dx.to(coef.dtype) + coef[:, 2] * dy.to(coef.dtype)
        inside = values[:3].amin(0) >= 0
        yield (triangles.base.index_select(0, triangle) + dy * width + dx, values[3], inside,
               lambda per_triangle, triangle=triangle: per_triangle.index_select(0, triangle))


def _visible_faces(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, near: float,
                   cull_backfaces: bool, max_pairs: int) -> torch.Tensor:
    """Index of the nearest face at each pixel centre of a group of images (-1 where none).

    Shape:
        verts: (G, V, 3); faces: (F, 3) long -> (G·H·W,) long.
    """
    num_pixels = verts.shape[0] * height * width
    triangles = _setup_triangles(verts, faces, height, width, near, cull_backfaces)
    if not triangles.classes:
        return torch.full((num_pixels,), -1, dtype=torch.long, device=verts.device)

    if verts.dtype != torch.float64:
        # One pass: key = (bits of the largest float32 - bits of the float32 inverse depth) in the
        # high word, face index in the low word. Bits of positive floats grow with the value, so
        # the smallest key is the nearest face, ties going to the smallest face index. Pairs not
        # inside get inverse depth 0, a high word of _FLOAT32_MAX_BITS that no covering face reaches.
        face_key = (_FLOAT32_MAX_BITS << 32) | triangles.face
        best = torch.full((num_pixels,), _EMPTY_KEY, dtype=torch.long, device=verts.device)
        for pixel, inv_depth, inside, per_pair in _iter_pairs(triangles, width, max_pairs):
            bits = torch.where(inside, inv_depth, 0.0).view(torch.int32).long()
            key = per_pair(face_key) - bits.bitwise_left_shift_(32)
            best.scatter_reduce_(0, pixel.reshape(-1), key.view(-1), "amin")
        found = best.bitwise_right_shift(32) < _FLOAT32_MAX_BITS
        return torch.where(found, best & 0xFFFFFFFF, -1)

    # float64: the exact nearest inverse depth first, then the smallest face index at that depth.
    nearest = torch.full((num_pixels,), float("-inf"), dtype=verts.dtype, device=verts.device)
    for pixel, inv_depth, inside, _ in _iter_pairs(triangles, width, max_pairs):
        nearest.scatter_reduce_(0, pixel.reshape(-1), torch.where(inside, inv_depth, float("-inf")).view(-1), "amax")
    best = torch.full((num_pixels,), _EMPTY_KEY, dtype=torch.long, device=verts.device)
    for pixel, inv_depth, inside, per_pair in _iter_pairs(triangles, width, max_pairs):
        winner = inside & (inv_depth == nearest.index_select(0, pixel.reshape(-1)).view_as(pixel))
        face = torch.where(winner, per_pair(triangles.face), _EMPTY_KEY)
        best.scatter_reduce_(0, pixel.reshape(-1), face.reshape(-1), "amin")
    return torch.where(best != _EMPTY_KEY, best, -1)


# ----------------------------------------------------------------------------------------------
# Differentiable barycentrics and depth of the visible faces
# ----------------------------------------------------------------------------------------------

def _surface_at_pixels(vertices_screen: torch.Tensor, faces: torch.Tensor, pix_to_face: torch.Tensor,
                       height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics and depth of the given faces at their pixel centres (autograd).

    Shape:
        vertices_screen: (G, V, 3); faces: (F, 3); pix_to_face: (G·H·W,) -> (G·H·W, 3), (G·H·W,).
    """
    num_vertices = vertices_screen.shape[1]
    covered = (pix_to_face >= 0).nonzero().squeeze(1)
    image = torch.div(covered, height * width, rounding_mode="floor")
    row = torch.div(covered - image * (height * width), width, rounding_mode="floor")
    px = (covered - image * (height * width) - row * width).to(vertices_screen.dtype)
    py = row.to(vertices_screen.dtype)
    face = pix_to_face.index_select(0, covered)
    first_vertex = image * num_vertices
    vertex = [f.index_select(0, face) + first_vertex for f in faces.t()]
    coords = vertices_screen.permute(2, 0, 1).reshape(3, -1)  # rows u, v, z; differentiable
    (x0, x1, x2), (y0, y1, y2), (z0, z1, z2) = ([c.index_select(0, v) for v in vertex] for c in coords)
    # Edge function opposite each corner: b_i times twice the signed area.
    edge = [(xk - xj) * (py - yj) - (yk - yj) * (px - xj)
            for (xj, yj), (xk, yk) in (((x1, y1), (x2, y2)), ((x2, y2), (x0, y0)), ((x0, y0), (x1, y1)))]
    weighted = torch.stack([edge[0] / z0, edge[1] / z1, edge[2] / z2], 1)  # b_i / z_i up to the area factor
    total = weighted.sum(1, keepdim=True)
    bary = weighted / total
    depth = (edge[0] + edge[1] + edge[2]) / total.squeeze(1)  # 1 / Σ (b_i / z_i): Σ edge_i = twice the area
    num = pix_to_face.shape[0]
    bary_full = vertices_screen.new_zeros(num, 3).index_copy(0, covered, bary)
    depth_full = vertices_screen.new_full((num,), BACKGROUND_DEPTH).index_copy(0, covered, depth)
    return bary_full, depth_full


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def rasterize_meshes(vertices_screen: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
                     cull_backfaces: bool = False, near: float = 1e-6,
                     max_pairs_per_chunk: int = 1 << 22, pix_to_face: torch.Tensor | None = None) -> Fragments:
    """Rasterize batched meshes of one topology: nearest face, barycentrics and depth per pixel.

    See the module docstring for the conventions (pixel centres, inside test, tie rule, culling).
    Vectorised PyTorch (no loop over faces or pixels), on the device of the inputs. Gradients flow
    from ``bary_coords`` and ``zbuf`` to ``vertices_screen``; ``pix_to_face`` is discrete.

    Args:
        vertices_screen: vertices as ``(u, v, z)``: pixel coordinates and camera depth (e.g.
            ``torch.cat([uv, depth[..., None]], -1)`` from :func:`diffface.camera.perspective_project`).
        faces: triangle vertex indices (0-based), shared by the batch.
        image_size: ``(H, W)`` or an int for a square image.
        cull_backfaces: drop triangles facing away from the camera.
        near: triangles with a vertex at ``z <= near`` are culled.
        max_pairs_per_chunk: bound on the (triangle, pixel) pairs processed at once (memory).
        pix_to_face: the visible triangle per pixel (−1: none) when it is already known, e.g. from an earlier call
            with the same vertices: the search for it is skipped (the costly, non-differentiable part) and only the
            barycentrics and depth are computed (a Jacobian's many passes at one point). Not checked against
            ``vertices_screen``; ``cull_backfaces`` and ``near`` do not apply.

    Returns:
        :class:`~diffface.renderers.fragments.Fragments`, in the dtype of ``vertices_screen``
        (float32 for half-precision inputs).

    Shape:
        vertices_screen: (B, V, 3); faces: (F, 3) int; pix_to_face: (B, H, W) long -> Fragments with (B, H, W)
        maps.

    Example:
        >>> verts = torch.tensor([[[1.0, 1.0, 2.0], [6.0, 1.0, 2.0], [1.0, 6.0, 2.0]]])
        >>> frags = rasterize_meshes(verts, torch.tensor([[0, 1, 2]]), (8, 8))
        >>> frags.pix_to_face[0, 2, 2].item(), frags.zbuf[0, 2, 2].item()
        (0, 2.0)
    """
    _check_inputs(vertices_screen, faces)
    height, width = _image_hw(image_size)
    if max_pairs_per_chunk < 1:
        raise ValueError(f"max_pairs_per_chunk must be positive, got {max_pairs_per_chunk}")
    if vertices_screen.dtype not in (torch.float32, torch.float64):
        vertices_screen = vertices_screen.float()
    faces = faces.long()
    batch, num_faces = vertices_screen.shape[0], faces.shape[0]
    if pix_to_face is not None and tuple(pix_to_face.shape) != (batch, height, width):
        raise ValueError(f"pix_to_face: expected shape {(batch, height, width)}, got {tuple(pix_to_face.shape)}")
    # Images are processed in groups so that the per-triangle tables and the pixel buffers of a
    # group stay within about max_pairs_per_chunk entries.
    group = max(1, min(batch, max_pairs_per_chunk // max(1, num_faces, height * width)))
    visible_parts, bary, zbuf = [], [], []
    for g in range(0, batch, group):
        verts = vertices_screen[g:g + group]
        if pix_to_face is not None:
            visible = pix_to_face[g:g + group].reshape(-1).long()
        else:
            with torch.no_grad():
                visible = _visible_faces(verts.detach(), faces, height, width, near, cull_backfaces,
                                         max_pairs_per_chunk)
        group_bary, group_zbuf = _surface_at_pixels(verts, faces, visible, height, width)
        visible_parts.append(visible)
        bary.append(group_bary)
        zbuf.append(group_zbuf)
    cat = (lambda parts: parts[0]) if len(visible_parts) == 1 else (lambda parts: torch.cat(parts))
    pix_to_face_map = cat(visible_parts).reshape(batch, height, width)
    return Fragments(pix_to_face=pix_to_face_map, bary_coords=cat(bary).reshape(batch, height, width, 3),
                     zbuf=cat(zbuf).reshape(batch, height, width), mask=pix_to_face_map >= 0)


def interpolate_attributes(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Blend per-vertex attributes at each pixel with the barycentrics of its visible face.

    Differentiable with respect to ``attributes`` and to ``fragments.bary_coords`` (hence to the
    vertex positions). Background pixels are zero.

    Args:
        fragments: output of a rasterizer.
        faces: the faces that were rasterized.
        attributes: per-vertex values (colours, normals, UVs, ...).

    Returns:
        Interpolated attributes.

    Shape:
        faces: (F, 3); attributes: (B, V, C) -> (B, H, W, C).

    Example:
        >>> verts = torch.tensor([[[1.0, 1.0, 2.0], [6.0, 1.0, 2.0], [1.0, 6.0, 2.0]]])
        >>> faces = torch.tensor([[0, 1, 2]])
        >>> colour = interpolate_attributes(rasterize_meshes(verts, faces, 8), faces, torch.eye(3)[None])
        >>> colour.shape
        torch.Size([1, 8, 8, 3])
    """
    check_shape(faces, ["F", 3], "faces")
    batch, height, width = fragments.pix_to_face.shape
    check_shape(attributes, [batch, "V", "C"], "attributes")
    num_vertices, channels = attributes.shape[1], attributes.shape[2]
    bary = fragments.bary_coords.to(attributes.dtype) if attributes.is_floating_point() else fragments.bary_coords
    corner = faces.long()[fragments.pix_to_face.clamp(min=0)]  # (B, H, W, 3)
    corner = corner + (torch.arange(batch, device=corner.device) * num_vertices).view(batch, 1, 1, 1)
    flat = attributes.reshape(batch * num_vertices, channels)
    out = None
    for k in range(3):  # one corner at a time keeps the gathered tensor at (B, H, W, C)
        # index_select rather than flat[index]: the same values, about twice as fast, and its forward-mode
        # derivative is a gather too (advanced indexing's is ~25x slower on the CPU: fitting.gauss_newton)
        term = flat.index_select(0, corner[..., k].flatten()).view(*corner.shape[:3], channels) * bary[..., k:k + 1]
        out = term if out is None else out + term
    return torch.where(fragments.mask[..., None], out, out.new_zeros(()))


class MeshRasterizer(nn.Module):
    """:func:`rasterize_meshes` as a module; settings fixed at construction.

    Args:
        settings: a :class:`RasterSettings`, or just the image size.

    Shape:
        forward(vertices_screen (B, V, 3), faces (F, 3)) -> Fragments with (B, H, W) maps.

    Example:
        >>> rasterizer = MeshRasterizer(RasterSettings(image_size=(8, 8)))
        >>> verts = torch.tensor([[[1.0, 1.0, 2.0], [6.0, 1.0, 2.0], [1.0, 6.0, 2.0]]])
        >>> rasterizer(verts, torch.tensor([[0, 1, 2]])).mask.sum().item()
        21
    """

    def __init__(self, settings: RasterSettings | int | tuple[int, int]):
        super().__init__()
        self.settings = settings if isinstance(settings, RasterSettings) else RasterSettings(image_size=settings)
        _image_hw(self.settings.image_size)

    def forward(self, vertices_screen: torch.Tensor, faces: torch.Tensor) -> Fragments:
        s = self.settings
        return rasterize_meshes(vertices_screen, faces, s.image_size, cull_backfaces=s.cull_backfaces, near=s.near,
                                max_pairs_per_chunk=s.max_pairs_per_chunk)

    def extra_repr(self) -> str:
        return f"settings={self.settings}"
