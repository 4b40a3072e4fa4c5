"""Stage 2's texture term in image space (``TextureFitConfig(term="image")``), beside the method's UV-frame term.

``E_tex = ‖M ⊙ (I_photo − I_model)‖ / |M|`` over the pixels of the fitting crop (resampled to
``image_term_size`` if set): ``I_model`` is the model rendered by the differentiable rasterizer
(:func:`~diffface.renderers.rasterize_meshes`) and shaded per pixel (:func:`~diffface.renderers.shade_sh`:
albedo and normals interpolated with the barycentrics, SH lighting), ``M`` the pixels whose nearest model
triangle faces the camera (the z-buffer does the self-occlusion; a back face in front, e.g. the far side of
the nose, hides what lies behind it), ``|M|`` their count. The norms are the UV term's (l1, l2, l2,1).

Gradients reach the pose and the shape through the barycentrics (where each vertex lands on the pixel
grid) and through the shading normals; the visible face of each pixel and the mask are held fixed within a
step, as usual for a rasterizer. The photo is compared where it was formed, pixel by pixel, instead of being
sampled at one point per vertex (which aliases where the photo has detail finer than the mesh, at the eyes
and lips).

Every pixel's colour is linear in the SH coefficients (``albedo(p) · Â∘Y(n(p))``) and in the albedo
coefficients (``(T0(p) + B(p)·β) ⊙ E(n(p))`` with ``B(p)`` the basis rows interpolated with the
barycentrics), so :func:`solve_image_lighting` and :func:`solve_image_albedo` minimise this same term
exactly (IRLS for l1 and l2,1), on the masked pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffface.camera import euler_to_rotation, project_points, world_to_camera
from diffface.checks import check_shape
from diffface.geometry import rotate_points
from diffface.lighting import lighting_design, sh_irradiance, solve_sh_lighting
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.renderers import Fragments, ShadingInput, interpolate_attributes, rasterize_meshes, shade_sh

from .active_vertices import ActiveVertices
from .frame_groups import FrameGroups
from .least_squares import irls_weights, solve_normal_equations

def resample_photos(images: torch.Tensor, size: int) -> torch.Tensor:
    """The photos at ``size × size`` pixels (antialiased bilinear; pixel ``j`` covers ``[j − ½, j + ½]`` at both
    sizes), or the photos themselves at their own size.

    Shape:
        images: (B, C, H, W) square -> (B, C, size, size).
    """
    check_shape(images, ["B", "C", "S", "S"], "images")
    if size == images.shape[-1]:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def front_facing_faces(vertices_screen: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Triangles facing the camera: negative signed area in pixel coordinates (y down), the rasterizer's
    ``cull_backfaces`` convention.

    Shape:
        vertices_screen: (B, V, 3) or (B, V, 2); faces: (F, 3) -> (B, F) bool.
    """
    x, y = vertices_screen[..., 0], vertices_screen[..., 1]
    x0, x1, x2 = (x[:, f] for f in faces.t())
    y0, y1, y2 = (y[:, f] for f in faces.t())
    return (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0) < 0


@dataclass(frozen=True)
class ImageTermOutput:
    """What the image-space texture term compares, and what its closed-form solves read.

    Attributes:
        rendered: the model shaded per pixel (0 where no triangle is visible).
        target: the photo at the term's size.
        mask: 1 on pixels whose visible triangle faces the camera.
        fragments: the rasterizer's output at the term's size.
        points: every vertex projected into the photo's pixels (the landmark term reads them).
        albedo, normals: the per-vertex albedo and unit normals (lighting frame) that were shaded.

    Shape:
        rendered, target: (B, 3, S, S); mask: (B, 1, S, S) float in {0, 1}; fragments: (B, S, S) maps;
        points: (B, V, 2); albedo, normals: (B, V, 3).
    """

    rendered: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    fragments: Fragments
    points: torch.Tensor
    albedo: torch.Tensor
    normals: torch.Tensor


class ImageTerm:
    """Renders the model into the photos' frame for the image-space texture term (module docstring).

    Args:
        faces: the mesh's triangles (every one: all of them can hide others).
        images: the photos in [0, 1], square.
        size: side of the image the term compares in (0: the photos' own); the camera is scaled to it.

    Shape:
        faces: (F, 3); images: (B, 3, H, H); __call__(vertices (B, V, 3) model space, model_normals (B, V, 3),
        albedo (B, V, 3), params (B, ...) with sh) -> :class:`ImageTermOutput`.

    Example:
        >>> term = ImageTerm(model.triangles, photos, size=112)
        >>> out = term(vertices, vertex_normals(vertices, model.triangles), albedo, params)
        >>> energy = texture_norm(out.rendered, out.target, out.mask, "l21")
    """

    def __init__(self, faces: torch.Tensor, images: torch.Tensor, size: int = 0):
        check_shape(faces, ["F", 3], "faces")
        check_shape(images, ["B", 3, "S", "S"], "images")
        self.faces = faces.long()
        self.size = int(size) or int(images.shape[-1])
        self.scale = self.size / images.shape[-1]
        self.target = resample_photos(images, self.size)

    def __call__(self, vertices: torch.Tensor, model_normals: torch.Tensor, albedo: torch.Tensor,
                 params: FaceParameters, pix_to_face: torch.Tensor | None = None) -> ImageTermOutput:
        """``pix_to_face``: the visible triangles when already known (:func:`~diffface.renderers.rasterize_meshes`:
        the search is skipped), (B, S, S)."""
        check_shape(vertices, [self.target.shape[0], "V", 3], "vertices")
        check_shape(model_normals, list(vertices.shape), "model_normals")
        check_shape(albedo, list(vertices.shape), "albedo")
        screen, normals, points = self.project(vertices, model_normals, params)
        rendered, fragments = self.render(screen, normals, albedo, params.sh, pix_to_face=pix_to_face)
        with torch.no_grad():
            front = front_facing_faces(screen, self.faces)
            visible_front = front.gather(1, fragments.pix_to_face.flatten(1).clamp_min(0)).view_as(fragments.mask)
            mask = (fragments.mask & visible_front)[:, None].to(rendered.dtype)
        return ImageTermOutput(rendered=rendered, target=self.target.to(rendered.dtype),
                               mask=mask, fragments=fragments, points=points, albedo=albedo, normals=normals)

    def project(self, vertices: torch.Tensor, model_normals: torch.Tensor,
                params: FaceParameters) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The vertices in the term's screen space, their normals in the lighting frame and their projections.

        Shape:
            vertices, model_normals: (B, V, 3) -> screen (B, V, 3) ``(u, v, z)`` at the term's size, normals
            (B, V, 3), points (B, V, 2) in the photos' pixels.
        """
        points_camera = world_to_camera(vertices, params.angles, params.translation)
        points = project_points(points_camera, params.focal, params.principal_point)
        # pixel j covers [j − ½, j + ½] at both sizes
        pixels = points if self.scale == 1 else (points + 0.5) * self.scale - 0.5
        screen = torch.cat([pixels, points_camera[..., 2:]], -1)
        return screen, rotate_points(model_normals, euler_to_rotation(params.angles)), points

    def render(self, screen: torch.Tensor, normals: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor,
               faces: torch.Tensor | None = None,
               pix_to_face: torch.Tensor | None = None) -> tuple[torch.Tensor, Fragments]:
        """Rasterize ``faces`` (default: the term's) at the term's size and shade per pixel.

        Shape:
            screen, normals, albedo: (B, V, 3); sh: (B, 27); pix_to_face: (B, S, S) or None ->
            (B, 3, S, S), fragments.
        """
        faces = self.faces if faces is None else faces
        fragments = rasterize_meshes(screen, faces, self.size, pix_to_face=pix_to_face)
        rendered = shade_sh(fragments, ShadingInput(faces=faces, normals=normals, albedo=albedo, sh=sh),
                            per_pixel=True)
        return rendered.permute(0, 3, 1, 2), fragments


def masked_pixels(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat indices of each sample's masked pixels, padded to the largest count.

    Returns:
        ``(index, valid)``: pixel indices into ``S·S`` (padding: some unmasked pixel) and which are real.

    Shape:
        mask: (B, 1, S, S) -> (B, P) long, (B, P) bool.
    """
    flat = mask.flatten(1) > 0
    counts = flat.sum(1)
    count = int(counts.max()) if flat.numel() else 0
    index = torch.argsort((~flat).to(torch.uint8), dim=1, stable=True)[:, :count]
    valid = torch.arange(count, device=mask.device)[None] < counts[:, None]
    return index, valid


def _pixel_faces(fragments: Fragments, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The visible triangle and the barycentrics at the given pixels.

    Shape:
        index: (B, P) flat pixel indices -> (B, P) long (0 where none), (B, P, 3).
    """
    face = fragments.pix_to_face.flatten(1).gather(1, index).clamp_min(0)
    bary = fragments.bary_coords.flatten(1, 2).gather(1, index[..., None].expand(-1, -1, 3))
    return face, bary


def _gather_pixels(image: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Shape: image (B, C, S, S), index (B, P) -> (B, P, C)."""
    return image.flatten(2).gather(2, index[:, None].expand(-1, image.shape[1], -1)).transpose(1, 2)


def _shading_at_pixels(out: ImageTermOutput, faces: torch.Tensor,
                       index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Albedo and unit normals at the pixels, interpolated as :func:`~diffface.renderers.shade_sh` does.

    Shape:
        index: (B, P) -> (B, P, 3), (B, P, 3).
    """
    both = interpolate_attributes(out.fragments, faces, torch.cat([out.albedo, out.normals], -1))
    both = both.flatten(1, 2).gather(1, index[..., None].expand(-1, -1, 6))
    normals = both[..., 3:]
    return both[..., :3], normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def solve_image_lighting(out: ImageTermOutput, faces: torch.Tensor, norm: str = "l2",
                         iterations: int = 3) -> torch.Tensor:
    """SH lighting minimising the image-space texture term for the shape, pose and albedo ``out`` was rendered
    with (IRLS for l1 and l2,1; the lighting it was rendered with is not used).

    Shape:
        faces: (F, 3) the rendered triangles -> (B, 27).
    """
    index, valid = masked_pixels(out.mask)
    pixel_albedo, pixel_normals = _shading_at_pixels(out, faces, index)
    design = lighting_design(pixel_albedo, pixel_normals)  # (B, P, 3, 9)
    colors = _gather_pixels(out.target, index)
    count = valid.sum(1).clamp_min(1).to(design.dtype)[:, None, None]
    present = valid[..., None].to(design.dtype)
    weights = torch.ones_like(colors)
    for _ in range(iterations if norm != "l2" else 1):
        sh = solve_sh_lighting(design, colors, weights * present / count, ridge=1e-6)
        rendered = torch.einsum("bnck,bck->bnc", design, sh.reshape(-1, 3, 9))
        weights = irls_weights(((colors - rendered) * present).transpose(1, 2), norm).transpose(1, 2)
    return sh


def _vertex_pairs(faces: torch.Tensor, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of vertices that share a triangle (each vertex with itself too), sorted row-major, and where each
    triangle's corner pair ``(k, l)`` falls among them.

    Shape:
        faces: (F, 3) -> row (N,), col (N,), entry (F, 9) (index into the N pairs of corner pair 3k + l).
    """
    rows = faces[:, :, None].expand(-1, 3, 3).reshape(-1)
    cols = faces[:, None, :].expand(-1, 3, 3).reshape(-1)
    keys, entry = torch.unique(rows * num_vertices + cols, return_inverse=True)
    return torch.div(keys, num_vertices, rounding_mode="floor"), keys % num_vertices, entry.view(-1, 9)


def albedo_normal_equations(basis: torch.Tensor, faces: torch.Tensor, face: torch.Tensor, bary: torch.Tensor,
                            irradiance: torch.Tensor, weight: torch.Tensor,
                            target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ w·d·dᵀ, Σ w·y·d)`` over pixels ``p`` and channels ``c``, for the albedo design row
    ``d = E_c(p) · Σ_k b_k(p) · B_c(v_k(p))`` (the basis rows of the pixel's triangle's vertices, interpolated).

    Accumulated on the mesh instead of the pixels: each triangle's 3 × 3 corner moments ``Σ_p w E² b_k b_l``
    add up on the pairs of vertices sharing a triangle (a sparse V × V matrix ``M_c``), and the normal matrix is
    ``Σ_c B_cᵀ M_c B_c``, so the cost grows with the mesh, not with the pixels times the coefficients.
    The per-pixel design (tests: ``reference_albedo_normal_equations``) gives the same.

    Shape:
        basis: (V, 3, K); faces: (F, 3); face: (B, P) visible triangle per pixel; bary: (B, P, 3);
        irradiance, weight, target: (B, P, 3) -> (B, K, K), (B, K).
    """
    B, P = face.shape
    V, _, K = basis.shape
    num_faces = faces.shape[0]
    pair_row, pair_col, entry = _vertex_pairs(faces, V)
    pairs = pair_row.shape[0]
    basis_by_channel = basis.permute(1, 0, 2).reshape(3 * V, K)  # row c·V + v
    corners = faces[face]  # (B, P, 3)
    # the right-hand side: Σ_p w E y b_k scattered to the corners' vertices, then through the basis
    per_corner = (weight * irradiance * target)[..., :, None] * bary[..., None, :]  # (B, P, channel, corner)
    row = ((torch.arange(B, device=face.device)[:, None, None, None] * 3
            + torch.arange(3, device=face.device)[None, None, :, None]) * V + corners[:, :, None, :])
    vertex_rhs = per_corner.new_zeros(B * 3 * V).index_add_(0, row.flatten(), per_corner.flatten())
    rhs = vertex_rhs.view(B, 3 * V) @ basis_by_channel
    # the normal matrix: corner moments per triangle, then per vertex pair
    scale = weight * irradiance.pow(2)
    moments = scale[..., :, None, None] * bary[..., None, :, None] * bary[..., None, None, :]  # (B, P, 3, 3, 3)
    flat_face = (torch.arange(B, device=face.device)[:, None] * num_faces + face).flatten()
    per_face = moments.new_zeros(B * num_faces, 27).index_add_(0, flat_face, moments.reshape(-1, 27))
    per_face = per_face.view(B, num_faces, 3, 9).permute(0, 2, 1, 3).reshape(B, 3, num_faces * 9)
    values = per_face.new_zeros(B, 3, pairs).index_add_(2, entry.flatten(), per_face)
    # per sample, only the vertices of its pixels' triangles carry moments: its product runs over them alone (the
    # pairs left out have no visible triangle: their moments are 0)
    blocks = torch.arange(3, device=face.device)[:, None]  # the channels' blocks
    normal = []
    for b in range(B):
        touched = torch.zeros(V, dtype=torch.bool, device=face.device)
        touched[corners[b].flatten()] = True
        kept = touched[pair_row] & touched[pair_col]
        local = torch.cumsum(touched, 0) - 1
        T = int(touched.sum())
        basis_touched = basis[touched].permute(1, 0, 2).reshape(3 * T, K)  # row c·T + local vertex
        indices = torch.stack([(blocks * T + local[pair_row[kept]]).flatten(),
                               (blocks * T + local[pair_col[kept]]).flatten()])
        vertex_pairs = torch.sparse_coo_tensor(indices, values[b][:, kept].flatten(), (3 * T, 3 * T),
                                               check_invariants=False, is_coalesced=True)
        normal.append(basis_touched.T @ torch.sparse.mm(vertex_pairs, basis_touched))  # Σ_c B_cᵀ M_c B_c
    return torch.stack(normal), rhs


def solve_image_albedo(model: MorphableModel | ActiveVertices, out: ImageTermOutput, faces: torch.Tensor,
                       sh: torch.Tensor, r_beta: float, norm: str = "l2", iterations: int = 3,
                       groups: FrameGroups | None = None) -> torch.Tensor:
    """Albedo coefficients β minimising ``E_tex + r_beta·Σ(β/σ)²`` (image-space term) for fixed shape, pose and
    lighting; l1 and l2,1 by IRLS (normal equations: :func:`albedo_normal_equations`). With ``groups``: one β per
    subject, fitted to all its frames (its prior once).

    Args:
        model: the albedo model (``albedo_mean``, ``albedo_basis``, ``albedo_std``, ``tex_dims``, ``albedo``) of
            the vertices ``faces`` index.

    Shape:
        sh: (B, 27) -> (B, K_tex), or (num_subjects, K_tex) with groups.
    """
    K, dtype = model.tex_dims, out.rendered.dtype
    index, valid = masked_pixels(out.mask)
    face, bary = _pixel_faces(out.fragments, index)
    corners = faces[face]
    _, pixel_normals = _shading_at_pixels(out, faces, index)
    irradiance = sh_irradiance(pixel_normals, sh)  # (B, P, 3)
    mean, basis = model.albedo_mean.to(dtype), model.albedo_basis.to(dtype).view(-1, 3, K)

    def interpolate(values: torch.Tensor) -> torch.Tensor:  # per-vertex (B or 1, V, 3) -> pixels (B, P, 3)
        values = values.expand(corners.shape[0], -1, -1)
        return sum(values.gather(1, corners[..., k, None].expand(-1, -1, 3)) * bary[..., k:k + 1] for k in range(3))

    base = interpolate(mean[None]) * irradiance
    residual_target = _gather_pixels(out.target, index) - base  # (B, P, 3)
    count = valid.sum(1).clamp_min(1).to(dtype)[:, None, None]
    present = valid[..., None].to(dtype)
    ridge = r_beta / model.albedo_std.to(dtype).clamp_min(1e-12).pow(2)
    weights = torch.ones_like(residual_target)
    for _ in range(iterations if norm != "l2" else 1):
        normal, rhs = albedo_normal_equations(basis, faces, face, bary, irradiance, weights * present / count,
                                              residual_target)
        beta = solve_normal_equations(normal, rhs, ridge, groups)
        per_frame = beta if groups is None else beta.index_select(0, groups.subject)
        rendered = interpolate(model.albedo(per_frame).to(dtype)) * irradiance
        weights = irls_weights(((residual_target + base - rendered) * present).transpose(1, 2), norm).transpose(1, 2)
    return beta
