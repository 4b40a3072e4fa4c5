"""Stage 2's shape and pose by Levenberg-Marquardt (``TextureFitConfig(optimizer="gauss_newton")``).

Stage 2's energy is a sum of squares once the texture norm is majorised by its IRLS weights
(:func:`~.least_squares.irls_weights`: ``Σ w·r²`` has the norm's gradient at the current residuals), so its
geometry (pose, translation, identity and expression, in one system; with ``joint_appearance`` the lighting and
albedo coefficients too) can take Gauss-Newton steps instead of Adam's: with ``ρ`` the residuals — the image
term's masked pixels ``r·√(w/|M|)``, the landmarks ``(u − l)·√(c_lands / count)`` in normalised coordinates, the
priors ``√r·c/σ`` — and ``J = ∂ρ/∂x``,

    ``(JᵀJ + λ·(diag JᵀJ + εI)) δ = −Jᵀρ``

per sample, the step kept where the energy goes down (``λ`` shrinks), retried with a larger ``λ`` where it
does not. ``J`` comes from the chain rule through the masked pixels' triangle corners
(:meth:`Stage2Residuals.jacobian`; the reference: forward-mode automatic differentiation, one column per
coordinate, :func:`forward_jacobian`), the rasterizer's visible triangles and the mask held fixed, as in the
backward pass; only the image-space term supports it (the UV term samples the photo with ``grid_sample``, which
has no forward-mode derivative).

A converged descent finds the energy's own minimum, so it needs an identity prior (``r_id > 0``): without one,
stage 2's minimum is far from any face (benchmarks/stage2_drift.py and docs/accuracy.md: 25 mm from the truth
after 15 steps on exact photos), and only the few steps of the Adam schedule keep the default fit near stage 1.
"""

from __future__ import annotations

from typing import Callable

import torch

from diffface.geometry import cross_product, vertex_normal_sums
from diffface.lighting import lighting_design, sh_irradiance, sh_shading
from diffface.renderers import rasterize_meshes
from diffface.linear_algebra import solve_spd

from .image_term import _gather_pixels, _pixel_faces, _shading_at_pixels, masked_pixels
from .least_squares import irls_weights


class Stage2Residuals:
    """The residual vector whose squared norm is stage 2's geometric energy around a linearisation point.

    Args:
        energy_fn: the stage-2 energy (``term="image"``; its config gives the norm, ``c_lands``, ``r_exp``,
            ``r_id``).
        params: the linearisation point: its visible triangles, masked pixels, IRLS weights and pixel count are
            held fixed (the Jacobian holds them fixed: the rasterizer's search for the visible triangles runs once,
            not in every forward-mode pass); :attr:`energy` and :attr:`residuals` are the energy and the residuals
            there.

    Shape:
        __call__(params (B, ...)) -> (B, N): masked pixels × 3, 68 × 2 landmarks, K_exp, K_id, K_albedo (the priors
        whose weight is not 0).
    """

    def __init__(self, energy_fn, params):
        self.energy_fn = energy_fn
        with torch.no_grad():
            terms = energy_fn(params)
            out = terms["output"]
            self.energy = terms["energy"]
            self.index, self.valid = masked_pixels(out.mask)
            self.pix_to_face = out.fragments.pix_to_face
            self.albedo = out.albedo
            difference = (out.target - out.rendered) * out.mask
            count = out.mask.sum((1, 2, 3)).clamp_min(1.0)[:, None, None, None]
            self.scale = (irls_weights(difference, energy_fn.config.norm) / count).sqrt() * out.mask
            self.residuals = self._stack(out, params)
            # what the appearance's columns read (linear in it): the masked pixels' weights, interpolation weights,
            # albedo and unit normals
            self.pixel_scale = _gather_pixels(self.scale, self.index) * self.valid[..., None]  # (B, P, 3)
            self.bary = _pixel_faces(out.fragments, self.index)[1]
            self.pixel_albedo, self.pixel_normals = _shading_at_pixels(out, energy_fn.image_term.faces, self.index)

    def __call__(self, params) -> torch.Tensor:
        energy_fn = self.energy_fn
        vertices, model_normals = energy_fn.shape_and_normals(params)
        return self._stack(energy_fn.image_term(vertices, model_normals, energy_fn.active.albedo(params.beta), params,
                                                self.pix_to_face), params)

    def _stack(self, out, params) -> torch.Tensor:
        """The residuals of the model rendered as ``out`` (an :class:`~.image_term.ImageTermOutput`)."""
        return torch.cat([self._texture(out.target, out.rendered), self._geometric(out.points, params)], 1)

    def _texture(self, target: torch.Tensor, rendered: torch.Tensor) -> torch.Tensor:
        """The masked pixels' residuals. Shape: (B, 3, S, S) -> (B, P·3), pixel-major."""
        texture = _gather_pixels((target - rendered) * self.scale, self.index) * self.valid[..., None]
        return texture.flatten(1)

    def _geometric(self, points: torch.Tensor, params) -> torch.Tensor:
        """The landmark and prior residuals. Shape: points (B, V, 2) -> (B, 68·2 + K_exp (+ K_id) (+ K_albedo))."""
        return self._geometric_at(self.energy_fn.landmark_points(points, params.angles), params)

    def _geometric_at(self, landmark_points: torch.Tensor, params) -> torch.Tensor:
        """:meth:`_geometric` given the landmarks' projections. Shape: (B, 68, 2) -> (B, G)."""
        energy_fn, config, model = self.energy_fn, self.energy_fn.config, self.energy_fn.model
        landmark_weight = (config.c_lands / energy_fn.count).sqrt()[:, None, None]
        landmarks = energy_fn.landmark_residuals_at(landmark_points) * landmark_weight
        parts = [landmarks.flatten(1), params.alpha_exp / model.exp_std.clamp_min(1e-12) * config.r_exp ** 0.5]
        # frames tied together: a shared identity's and albedo's prior counts once per subject, each frame its share
        share = 1.0 if energy_fn.ties is None else energy_fn.ties.prior_share(landmark_points.dtype)[:, None].sqrt()
        if config.r_id:
            parts.append(params.alpha_id / model.id_std.clamp_min(1e-12) * config.r_id ** 0.5 * share)
        if config.r_beta:
            parts.append(params.beta / model.albedo_std.clamp_min(1e-12) * config.r_beta ** 0.5 * share)
        return torch.cat(parts, 1)

    def jacobian(self, to_params: Callable[[dict], object], variables: dict[str, torch.Tensor],
                 names: tuple[str, ...], chunk_size: int | None = None) -> torch.Tensor:
        """``∂residuals/∂(variables[names])`` at the linearisation point by the chain rule through the vertices.

        A masked pixel's residual depends on the shape and pose only through the screen positions ``(u, v, z)`` and
        normals of its visible triangle's three corners (the triangle held fixed), so ``J = L · C``: ``L``, the 18
        derivatives of each pixel's colour with respect to its corners, by forward mode on a mesh of private
        triangles (one per masked pixel, its own copy of the three corners: one pass of the renderer per corner
        value, not one per coordinate), and ``C``, the corners' derivatives:

        - pose and translation: forward mode through the camera on the corners and the landmarks alone;
        - identity and expression (linear in the shape ``S = M + A·α``): a corner ``v``'s screen position moves by
          ``P_v·A_v`` (``P_v`` its 3 × 3 camera Jacobian, by forward mode), its normal ``n = s/|s|``,
          ``s = Σ_f (x₁ − x₀) × (x₂ − x₀)`` over its triangles, by ``R·(I − nnᵀ)/|s|·∂s/∂α`` with ``∂s/∂α =
          Σ_f (A₁ − A₀) × e₂ + e₁ × (A₂ − A₀)`` (``eₖ = xₖ − x₀``; only the triangles around the corners), all
          columns at once, sample by sample, ``chunk_size`` columns at a time (default: all). The pixels'
          derivatives are contracted with ``L`` before the basis: the cost grows with the masked pixels and the
          triangles times the coordinates, not with the vertices times the coordinates times the samples as a
          forward-mode pass over the mesh would.

        The colour is linear in the albedo and the lighting: their columns are exact products of what the
        linearisation point's rendering holds (interpolation weights, irradiance; the lighting's design). The
        landmark residuals' columns follow the landmarks' projections (their vertices marched at the linearisation
        point), the priors' by forward mode. ``to_params`` must map the identity, expression and albedo variables
        to the model's coefficients elementwise and linearly (as stage 2's σ units do). The same Jacobian as
        :func:`forward_jacobian` of :meth:`__call__` (to rounding).

        Shape:
            variables[name]: (B, K_name); -> (B, N, Σ K_name).
        """
        energy_fn = self.energy_fn
        term, active = energy_fn.image_term, energy_fn.active
        unknown = set(names) - {"pose", "translation", "identity", "expression", "albedo", "lighting"}
        if unknown:
            raise ValueError(f"no chain-rule Jacobian for {sorted(unknown)}")
        camera_names = tuple(name for name in names if name in ("pose", "translation"))
        coefficient_names = tuple(name for name in names if name in ("identity", "expression"))
        variables = {name: value.detach() for name, value in variables.items()}
        count = self.index.shape[1]

        def moved(part_names, values):
            return to_params(dict(variables, **dict(zip(part_names, values))))

        with torch.no_grad():
            params = to_params(variables)
            sh = params.sh.detach()
            vertices = active.shape(params.alpha_id, params.alpha_exp)
            sums = vertex_normal_sums(vertices, active.triangles)
            lengths = sums.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # as vertex_normals
            normals = sums / lengths
            _, _, points = term.project(vertices, normals, params)
            landmarks = energy_fn.landmark_indices(points, params.angles)  # (B, 68)
        batch, dtype, device = sh.shape[0], sh.dtype, sh.device
        corners = term.faces[self.pix_to_face.flatten(1).gather(1, self.index).clamp_min(0)]  # (B, P, 3)
        corner_ids = corners.flatten(1)  # (B, 3P)
        watched = torch.cat([corner_ids, landmarks], 1)  # the corners, then the landmarks
        watched_vertices, watched_normals = _gather_rows(vertices, watched), _gather_rows(normals, watched)

        def camera(watched_vertices, watched_normals, *values):  # the corners' features, the watched projections
            params = moved(camera_names, values)
            screen, camera_normals, watched_points = term.project(watched_vertices, watched_normals, params)
            return (torch.cat([screen, camera_normals], -1), watched_points,
                    self._geometric_at(watched_points[:, 3 * count:], params))

        with torch.no_grad():
            features, watched_points, _ = camera(watched_vertices, watched_normals, *(
                variables[name] for name in camera_names))
            corner_values = torch.cat([features[:, :3 * count], _gather_rows(self.albedo, corner_ids)], -1)
            corner_values = corner_values.view(batch, count, 3, 9)
            landmark_points = watched_points[:, 3 * count:]

        # L: pixel j of each sample is private triangle j (-1 where the mask's padding is); the masked pixels alone
        # are shaded, as the renderer shades them (per pixel: albedo and normals interpolated, normals renormalised)
        private_faces = torch.arange(3 * count, device=device).view(count, 3)
        slots = torch.arange(count, device=device).expand(batch, count)
        private_map = torch.full((batch, term.size ** 2), -1, dtype=torch.long, device=device).scatter(
            1, self.index, torch.where(self.valid, slots, torch.full_like(slots, -1))).view(self.pix_to_face.shape)
        target = _gather_pixels(term.target.to(dtype), self.index)  # (B, P, 3)

        def pixel_part(corner_values):  # (B, P, 3, 9) -> the masked pixels' residuals (B, P·3)
            screen = corner_values[..., :3].reshape(batch, 3 * count, 3)
            fragments = rasterize_meshes(screen, private_faces, term.size, pix_to_face=private_map)
            bary = _gather_rows(fragments.bary_coords.flatten(1, 2), self.index)
            normals, albedo = (bary[..., None] * corner_values[..., 3:]).sum(2).split(3, -1)
            normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            return ((target - sh_shading(albedo, normals, sh)) * self.pixel_scale).flatten(1)

        # 18 passes: the corners' screen positions and normals (the albedo and lighting act linearly: below)
        basis = torch.eye(18, dtype=dtype, device=device).view(18, 1, 1, 3, 6)
        basis = torch.nn.functional.pad(basis, (0, 3)).expand(-1, batch, count, 3, 9)
        local = torch.func.vmap(lambda t: torch.func.jvp(pixel_part, (corner_values,), (t,))[1])(basis)
        local = local.view(3, 6, batch, count, 3)  # corner, corner value, sample, pixel, colour

        columns = {}
        if camera_names or coefficient_names:
            # forward mode through the camera: 3 + 3 tangents moving every watched vertex's position / normal along
            # one axis (each output depends on its own vertex: per-vertex 3 × 3 Jacobians), then the camera's
            # coordinates
            camera_primals = tuple(variables[name] for name in camera_names)
            axes = torch.eye(3, dtype=dtype, device=device)[:, None, None, :].expand(3, batch, watched.shape[1], 3)
            zeros = torch.zeros_like(axes)
            camera_count = sum(value.shape[1] for value in camera_primals)
            own = _coordinate_tangents(camera_primals) if camera_primals else ()
            tangents = (torch.cat([axes, zeros, zeros[:1].expand(camera_count, -1, -1, -1)]),
                        torch.cat([zeros, axes, zeros[:1].expand(camera_count, -1, -1, -1)]),
                        *(torch.cat([value.new_zeros((6,) + value.shape[1:]), value]) for value in own))
            feature_columns, point_columns, geometric_columns = torch.func.vmap(
                lambda *t: torch.func.jvp(camera, (watched_vertices, watched_normals) + camera_primals, t)[1])(
                *tangents)
            if camera_names:
                corner_columns = feature_columns[6:, :, :3 * count].reshape(camera_count, batch, count, 3, 6)
                texture = torch.einsum("ckbpq,tbpck->tbpq", local[:, :6], corner_columns).flatten(2)
                camera_columns = torch.cat([texture, geometric_columns[6:]], 2)
                columns.update(zip(camera_names, camera_columns.split(
                    [value.shape[1] for value in camera_primals])))
            if coefficient_names:
                columns.update(self._coefficient_columns(
                    coefficient_names, variables, moved, local[:, :6], feature_columns[:6, :, :3 * count],
                    point_columns[:3, :, 3 * count:], vertices, normals, lengths, corner_ids, landmarks,
                    landmark_points, chunk_size))
        if "albedo" in names:  # linear: the corners' basis rows
            # a pixel's colour c is Σ_k b_k·albedo_k,c times its irradiance E_c: its derivative along corner k's
            # albedo in channel c is b_k·E_c (weighted as the residual)
            shaded = -self.pixel_scale * sh_irradiance(self.pixel_normals, sh)  # (B, P, 3)
            channels = torch.eye(3, dtype=dtype, device=device)
            local_albedo = torch.einsum("bpk,bpc,jc->kjbpc", self.bary.to(dtype), shaded, channels)
            columns["albedo"] = self._albedo_columns(variables, moved, local_albedo, corner_ids, landmark_points)
        if "lighting" in names:  # linear: colour c = Σ_i design_c,i · sh_c,i
            design = -self.pixel_scale[..., None] * lighting_design(self.pixel_albedo, self.pixel_normals)
            channels = torch.eye(3, dtype=dtype, device=device)
            sh_texture = torch.einsum("bpci,jc->jibpc", design, channels).reshape(27, batch, 3 * count)
            columns["lighting"] = torch.cat([sh_texture, sh_texture.new_zeros(
                sh_texture.shape[:2] + (self.residuals.shape[1] - sh_texture.shape[2],))], 2)
        return torch.cat([columns[name] for name in names]).permute(1, 2, 0)

    def _prior_columns(self, part_names: tuple[str, ...], variables: dict, moved, landmark_points: torch.Tensor,
                       landmark_tangents: torch.Tensor | None) -> torch.Tensor:
        """The landmark and prior residuals' columns of ``part_names``, by forward mode with the landmarks'
        projections moving along ``landmark_tangents`` (None: fixed). Shape: -> (K, B, G)."""
        primals = tuple(variables[name] for name in part_names)
        tangents = _coordinate_tangents(primals)
        if landmark_tangents is None:
            landmark_tangents = landmark_points.new_zeros((tangents[0].shape[0],) + landmark_points.shape)
        return torch.func.vmap(lambda *t: torch.func.jvp(
            lambda points, *values: self._geometric_at(points, moved(part_names, values)),
            (landmark_points,) + primals, t)[1])(landmark_tangents, *tangents)

    def _coefficient_columns(self, names: tuple[str, ...], variables: dict, moved, local: torch.Tensor,
                             vertex_features: torch.Tensor, vertex_points: torch.Tensor, vertices: torch.Tensor,
                             normals: torch.Tensor, lengths: torch.Tensor, corner_ids: torch.Tensor,
                             landmarks: torch.Tensor, landmark_points: torch.Tensor,
                             chunk_size: int | None) -> dict[str, torch.Tensor]:
        """The identity's and expression's columns (:meth:`jacobian`).

        Shape:
            local: (3, 6, B, P, 3) the pixels' derivatives with respect to their corners' screen positions and
            normals; vertex_features: (3, B, 3P, 6) the corners' features' derivatives along each model axis (the
            first three moving the position, the next three the normal); vertex_points: (3, B, 68, 2) the
            landmarks' projections' along each axis of their positions; vertices, normals: (B, V, 3); lengths:
            (B, V, 1) the normals' lengths before normalising; corner_ids: (B, 3P); landmarks: (B, 68) -> {name:
            (K_name, B, N)}.
        """
        energy_fn = self.energy_fn
        active, model = energy_fn.active, energy_fn.model
        batch, count = local.shape[2], local.shape[3]
        rows = {"identity": slice(0, model.id_dims), "expression": slice(model.id_dims, model.id_dims + model.exp_dims)}
        fields = {"identity": "alpha_id", "expression": "alpha_exp"}
        num_vertices = vertices.shape[1]
        # A: (3, V, K) the model's basis of the coordinates, component-major (in the model's units; × dα/dx below)
        basis = torch.cat([active.basis_t[rows[name]] for name in names]).view(-1, num_vertices, 3).permute(2, 1, 0)
        basis = basis.contiguous()
        scale = torch.cat([_linear_scale(variables, moved, name, fields[name]) for name in names], 1)  # (B, K)
        screen_jacobian = vertex_features[:3, ..., :3].reshape(3, batch, count, 3, 3)  # axis, b, p, corner, u v z
        normal_jacobian = vertex_features[3:, ..., 3:].reshape(3, batch, count, 3, 3)
        # the pixels' derivatives with respect to their corners' model-space positions and normal sums
        by_position = torch.einsum("ckbpq,jbpck->bpqcj", local[:, :3], screen_jacobian)
        by_normal = torch.einsum("ckbpq,jbpck->bpqcj", local[:, 3:], normal_jacobian)
        corner_normals = _gather_rows(normals, corner_ids).view(batch, count, 1, 3, 3)
        corner_lengths = _gather_rows(lengths, corner_ids).view(batch, count, 1, 3, 1)
        by_sum = (by_normal - corner_normals * (by_normal * corner_normals).sum(-1, keepdim=True)) / corner_lengths
        weights = torch.cat([by_position, by_sum], -1)  # (B, P, 3, 3, 6): colour, corner, position / sum axis
        faces = active.triangles.long()
        # only the triangles around a sample's corners move their normals
        around = torch.zeros(batch, num_vertices, dtype=torch.bool, device=faces.device)
        around.scatter_(1, corner_ids, True)
        around = around[:, faces].any(-1)  # (B, F)
        total = basis.shape[2]
        step = chunk_size or total
        texture = []
        for start in range(0, total, step):
            part = basis[..., start:start + step].contiguous()  # (3, V, k)
            chunk = []
            for b in range(batch):
                near = faces[around[b]]
                origin = part.index_select(1, near[:, 0])
                first = part.index_select(1, near[:, 1]) - origin  # (3, F_b, k)
                second = part.index_select(1, near[:, 2]).sub_(origin)
                corner = vertices[b].index_select(0, near.flatten()).view(-1, 3, 3)
                edge1 = (corner[:, 1] - corner[:, 0]).T[..., None]  # (3, F_b, 1)
                edge2 = (corner[:, 2] - corner[:, 0]).T[..., None]
                # ∂s/∂α per triangle: (A₁ − A₀) × e₂ + e₁ × (A₂ − A₀), component by component
                moved_sums = torch.empty_like(first)
                for i, (j, k) in enumerate(((1, 2), (2, 0), (0, 1))):
                    torch.mul(first[j], edge2[k], out=moved_sums[i])
                    moved_sums[i].addcmul_(first[k], edge2[j], value=-1).addcmul_(edge1[j], second[k])
                    moved_sums[i].addcmul_(edge1[k], second[j], value=-1)
                sum_jacobian = torch.zeros_like(part)
                for k in range(3):
                    sum_jacobian.index_add_(1, near[:, k], moved_sums)
                ids = corner_ids[b]
                at_corners = torch.cat([part.index_select(1, ids), sum_jacobian.index_select(1, ids)])  # (6, 3P, k)
                at_corners = at_corners.view(6, count, 3, -1).permute(1, 2, 0, 3).reshape(count, 18, -1)
                chunk.append(torch.bmm(weights[b].reshape(count, 3, 18), at_corners).permute(2, 0, 1).flatten(1))
            texture.append(torch.stack(chunk, 1))
        texture = torch.cat(texture) * scale.T[..., None]  # (K, B, 3P)
        basis = basis.permute(1, 2, 0)  # (V, K, 3)
        landmark_basis = basis.index_select(0, landmarks.flatten()).view(batch, landmarks.shape[1], total, 3)
        landmark_tangents = torch.einsum("jblx,blkj->kblx", vertex_points, landmark_basis) * scale.T[..., None, None]
        geometric = self._prior_columns(names, variables, moved, landmark_points, landmark_tangents)
        columns = torch.cat([texture, geometric], 2)
        return dict(zip(names, columns.split([variables[name].shape[1] for name in names])))

    def _albedo_columns(self, variables: dict, moved, local: torch.Tensor, corner_ids: torch.Tensor,
                        landmark_points: torch.Tensor) -> torch.Tensor:
        """The albedo's columns (linear in its coefficients: the corners' basis rows).

        Shape:
            local: (3, 3, B, P, 3) the pixels' derivatives with respect to their corners' albedo -> (K, B, N).
        """
        active = self.energy_fn.active
        batch, count = local.shape[2], local.shape[3]
        dims = variables["albedo"].shape[1]
        geometric = self._prior_columns(("albedo",), variables, moved, landmark_points, None)
        if active.tex_dims == 0 or dims == 0:
            texture = geometric.new_zeros((dims, batch, 3 * count))
        else:
            basis = active.albedo_basis.view(-1, 3, active.tex_dims)  # (R, 3, K)
            at_corners = basis.index_select(0, corner_ids.flatten()).view(batch, count, 3, 3, -1)
            scale = _linear_scale(variables, moved, "albedo", "beta")  # (B, K)
            texture = torch.einsum("cjbpq,bpcjk->kbpq", local, at_corners).flatten(2) * scale.T[..., None]
        return torch.cat([texture, geometric], 2)


def _gather_rows(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Each sample's rows ``ids``. Shape: values (B, V, C), ids (B, N) -> (B, N, C)."""
    return values.gather(1, ids[..., None].expand(-1, -1, values.shape[-1]))


def _linear_scale(variables: dict, moved, name: str, field: str) -> torch.Tensor:
    """``∂params.field/∂variables[name]`` of an elementwise linear map (stage 2's σ units), per coordinate.
    Shape: -> (B, K)."""
    value = variables[name]
    return torch.func.jvp(lambda v: getattr(moved((name,), (v,)), field), (value,), (torch.ones_like(value),))[1]


def _coordinate_tangents(primals: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Tangent ``k`` moves coordinate ``k`` of every sample (sample ``b``'s outputs depend on its own variables
    only), split into the variables' parts.

    Shape:
        primals[i]: (B, K_i) -> (K, B, K_i) each, K = Σ K_i.
    """
    sizes = [value.shape[1] for value in primals]
    batch, total = primals[0].shape[0], sum(sizes)
    basis = torch.eye(total, dtype=primals[0].dtype, device=primals[0].device)[:, None].expand(total, batch, total)
    return basis.split(sizes, -1)


def forward_jacobian(function: Callable[[dict], torch.Tensor], variables: dict[str, torch.Tensor],
                     names: tuple[str, ...], chunk_size: int | None = None) -> torch.Tensor:
    """``∂function/∂(variables[names])`` per sample by forward-mode AD: one Jacobian-vector product per coordinate
    (the same coordinate of every sample at once: sample ``b``'s output depends on sample ``b``'s variables only),
    ``chunk_size`` of them batched by ``torch.func.vmap`` (default: about 64 sample-columns per batch on a CPU, where
    larger batches were slower, 4096 on a GPU; the primal computation, e.g. the rasterizer's search for the visible
    triangles, runs once per batch). The result does not depend on ``chunk_size``.

    Shape:
        variables[name]: (B, K_name); function(variables) -> (B, N); -> (B, N, Σ K_name).
    """
    primals = tuple(variables[name].detach() for name in names)
    if chunk_size is None:
        chunk_size = max(1, (64 if primals[0].device.type == "cpu" else 4096) // max(1, primals[0].shape[0]))

    def column(*tangents):
        return torch.func.jvp(lambda *values: function(dict(variables, **dict(zip(names, values)))),
                              primals, tangents)[1]

    return torch.func.vmap(column, chunk_size=chunk_size)(*_coordinate_tangents(primals)).permute(1, 2, 0)


def normal_equations(energy_fn, variables: dict[str, torch.Tensor], names: tuple[str, ...],
                     to_params: Callable[[dict], object], jacobian_chunk: int | None = None,
                     jacobian: str = "chain") -> tuple[Stage2Residuals, torch.Tensor, torch.Tensor]:
    """The Gauss-Newton normal equations ``(JᵀJ, Jᵀρ)`` of :class:`Stage2Residuals` at ``variables``, per sample, for
    the coordinates of ``names`` (``jacobian``, ``jacobian_chunk``: as :func:`levenberg_marquardt_step`'s).

    Shape:
        variables[name]: (B, K_name) -> the residuals, (B, K, K), (B, K) with K = Σ K_name.
    """
    residuals = Stage2Residuals(energy_fn, to_params(variables))
    if jacobian == "chain":
        full = residuals.jacobian(to_params, variables, names, jacobian_chunk)
    else:
        full = forward_jacobian(lambda v: residuals(to_params(v)), variables, names, jacobian_chunk)
    return residuals, full.transpose(1, 2) @ full, (full.transpose(1, 2) @ residuals.residuals[..., None])[..., 0]


def damping_matrix(normal: torch.Tensor) -> torch.Tensor:
    """``diag(normal) + 10⁻⁶·I``: what Levenberg-Marquardt's damping ``λ`` multiplies. Shape: (N, K, K) -> (N, K, K)."""
    eye = torch.eye(normal.shape[-1], dtype=normal.dtype, device=normal.device)
    return torch.diag_embed(normal.diagonal(dim1=1, dim2=2)) + 1e-6 * eye


def levenberg_marquardt_step(energy_fn, variables: dict[str, torch.Tensor], names: tuple[str, ...],
                             to_params: Callable[[dict], object], damping: torch.Tensor,
                             max_tries: int = 6, jacobian_chunk: int | None = None,
                             jacobian: str = "chain") -> torch.Tensor:
    """One Levenberg-Marquardt step on ``variables[names]`` (in place), per sample (module docstring).

    ``damping`` (λ, per sample) is updated in place: × 0.3 where a step is kept, × 10 per rejected try. A sample
    keeps its variables where no try within ``max_tries`` lowers its (finite) energy. ``jacobian``: ``"chain"``
    (:meth:`Stage2Residuals.jacobian`) or ``"direct"`` (:func:`forward_jacobian` through the whole renderer, one
    pass per coordinate: the reference); ``jacobian_chunk``: their ``chunk_size``.

    Returns:
        (B,) bool: the samples whose step was kept.

    Shape:
        variables[name]: (B, K_name); damping: (B,).
    """
    variables = {k: v.detach() for k, v in variables.items()}
    residuals, normal, gradient = normal_equations(energy_fn, variables, names, to_params, jacobian_chunk, jacobian)
    start = {name: variables[name].clone() for name in names}
    sizes = [start[name].shape[1] for name in names]
    kept = torch.zeros_like(damping, dtype=torch.bool)
    for _ in range(max_tries):
        system = normal + damping[:, None, None] * damping_matrix(normal)
        step, ok = solve_spd(system, -gradient[..., None])
        step = torch.nan_to_num(step[..., 0]) * (ok & ~kept)[:, None]
        trial = dict(variables, **{name: start[name] + part
                                   for name, part in zip(names, step.split(sizes, dim=1))})
        with torch.no_grad():
            energy = energy_fn(to_params(trial))["energy"]
        better = torch.isfinite(energy) & (energy < residuals.energy) & ~kept
        for name in names:
            variables[name].copy_(torch.where(better[:, None], trial[name], variables[name]))
        damping.copy_(torch.where(better, damping * 0.3, torch.where(kept, damping, damping * 10)))
        kept |= better
        if kept.all():
            break
    return kept
