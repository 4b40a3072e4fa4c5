"""Slow, obviously correct rasterizer: Python loops over images, pixels and faces in float64.

The ground truth for :func:`diffface.renderers.rasterize.rasterize_meshes` on tiny meshes (a few
faces, images of a few dozen pixels). Same conventions: pixel ``(i, j)`` sampled at
``(u, v) = (j, i)``; a pixel centre is inside a triangle when no screen-space barycentric is
negative; the nearest face wins, ties going to the smallest face index; triangles with a vertex
at ``z <= near`` or zero screen area are culled, back faces (positive signed area in pixel
coordinates) too when ``cull_backfaces``; barycentrics are perspective-correct.
"""

from __future__ import annotations

import math

import torch

from .fragments import BACKGROUND_DEPTH, Fragments


def signed_area2(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> float:
    """Twice the signed area of the screen triangle ``abc`` (positive when clockwise on screen, y down)."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])


def rasterize_meshes_reference(vertices_screen: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
                               cull_backfaces: bool = False, near: float = 1e-6) -> Fragments:
    """Reference rasterization (see the module docstring).

    Shape:
        vertices_screen: (B, V, 3) as (u, v, z); faces: (F, 3) -> Fragments with (B, H, W) maps,
        float64 ``bary_coords`` and ``zbuf``.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    verts = vertices_screen.detach().double().cpu().tolist()
    face_list = faces.long().cpu().tolist()
    batch = len(verts)
    pix_to_face = torch.full((batch, height, width), -1, dtype=torch.long)
    bary_coords = torch.zeros(batch, height, width, 3, dtype=torch.float64)
    zbuf = torch.full((batch, height, width), BACKGROUND_DEPTH, dtype=torch.float64)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                best_depth, best_face, best_bary = math.inf, -1, None
                for f, (i0, i1, i2) in enumerate(face_list):
                    corners = [verts[b][i0], verts[b][i1], verts[b][i2]]
                    if not all(math.isfinite(c) for corner in corners for c in corner):
                        continue
                    if min(c[2] for c in corners) <= near:
                        continue
                    p0, p1, p2 = [(c[0], c[1]) for c in corners]
                    area = signed_area2(p0, p1, p2)
                    if area == 0 or (cull_backfaces and area > 0):
                        continue
                    p = (float(j), float(i))
                    # screen barycentric of vertex k: area of the sub-triangle opposite it / total area
                    screen = (signed_area2(p, p1, p2) / area, signed_area2(p0, p, p2) / area,
                              signed_area2(p0, p1, p) / area)
                    if min(screen) < 0:
                        continue
                    weighted = [s / c[2] for s, c in zip(screen, corners)]
                    depth = 1.0 / sum(weighted)
                    if depth < best_depth:  # strict: an equal depth keeps the smaller face index
                        best_depth, best_face = depth, f
                        best_bary = [w * depth for w in weighted]
                if best_face >= 0:
                    pix_to_face[b, i, j] = best_face
                    bary_coords[b, i, j] = torch.tensor(best_bary, dtype=torch.float64)
                    zbuf[b, i, j] = best_depth
    return Fragments(pix_to_face=pix_to_face, bary_coords=bary_coords, zbuf=zbuf, mask=pix_to_face >= 0)


def interpolate_attributes_reference(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor
                                     ) -> torch.Tensor:
    """Reference interpolation, one pixel at a time. Shape: attributes (B, V, C) -> (B, H, W, C)."""
    batch, height, width = fragments.pix_to_face.shape
    out = torch.zeros(batch, height, width, attributes.shape[2], dtype=torch.float64)
    attrs = attributes.detach().double().cpu()
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                f = int(fragments.pix_to_face[b, i, j])
                if f < 0:
                    continue
                for k in range(3):
                    out[b, i, j] += float(fragments.bary_coords[b, i, j, k]) * attrs[b, int(faces[f, k])]
    return out


# ----------------------------------------------------------------------------------------------
# Test scenes shared by the rasterizer tests and benchmarks
# ----------------------------------------------------------------------------------------------

def random_triangle_soup(batch: int, num_faces: int, image_size: int | tuple[int, int],
                         generator: torch.Generator | None = None, depth_range: tuple[float, float] = (1.0, 5.0),
                         scale_range: tuple[float, float] | None = None, margin: float = 2.0,
                         dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random screen-space triangles, different in every batch element, each with its own three vertices.

    Centres are uniform over the image grown by ``margin`` pixels on each side; corner offsets are
    Gaussian with a log-uniform scale in ``scale_range`` pixels (default: 1 to half the larger
    side), so sizes span tiny to image-covering; vertex depths are uniform in ``depth_range``
    (triangles are tilted and may interpenetrate).

    Shape:
        -> vertices_screen (B, 3·F, 3), faces (F, 3) long.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    low, high = scale_range if scale_range is not None else (1.0, max(height, width) / 2)
    extent = torch.tensor([width + 2 * margin, height + 2 * margin], dtype=torch.float64)
    centre = torch.rand(batch, num_faces, 1, 2, generator=generator, dtype=torch.float64) * extent - margin - 0.5
    log_scale = torch.rand(batch, num_faces, 1, 1, generator=generator, dtype=torch.float64)
    scale = torch.exp(log_scale * (torch.log(torch.tensor(high)) - torch.log(torch.tensor(low))) + torch.log(torch.tensor(low)))
    uv = centre + torch.randn(batch, num_faces, 3, 2, generator=generator, dtype=torch.float64) * scale
    z = torch.rand(batch, num_faces, 3, 1, generator=generator, dtype=torch.float64)
    z = depth_range[0] + (depth_range[1] - depth_range[0]) * z
    vertices = torch.cat([uv, z], -1).reshape(batch, 3 * num_faces, 3).to(dtype)
    return vertices, torch.arange(3 * num_faces).view(num_faces, 3)


def uv_sphere(rings: int, segments: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit sphere with ``rings`` latitude bands and ``segments`` longitudes, outward (CCW) faces.

    Shape:
        -> vertices (2 + (rings - 1)·segments, 3), faces (2·segments·(rings - 1), 3) long.
    """
    theta = torch.arange(1, rings, dtype=torch.float64) * torch.pi / rings  # polar angle of each ring
    phi = torch.arange(segments, dtype=torch.float64) * 2 * torch.pi / segments
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([theta.sin() * phi.cos(), theta.cos(), theta.sin() * phi.sin()], -1).reshape(-1, 3)
    vertices = torch.cat([torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), ring,
                          torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)])
    bottom = vertices.shape[0] - 1
    j = torch.arange(segments)
    j1 = (j + 1) % segments
    faces = [torch.stack([torch.zeros_like(j), 1 + j, 1 + j1], 1)]
    for r in range(rings - 2):
        a, b = 1 + r * segments + j, 1 + r * segments + j1
        c, d = a + segments, b + segments
        faces += [torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)]
    last = 1 + (rings - 2) * segments
    faces.append(torch.stack([last + j, torch.full_like(j, bottom), last + j1], 1))
    faces = torch.cat(faces)
    # orient every face outward (the normal along the centroid)
    corner = vertices[faces]
    normal = torch.cross(corner[:, 1] - corner[:, 0], corner[:, 2] - corner[:, 0], dim=1)
    inward = (normal * corner.mean(1)).sum(1) < 0
    faces[inward] = faces[inward][:, [0, 2, 1]]
    return vertices.to(dtype), faces
