"""Stage 2's shape and pose by Levenberg-Marquardt (``TextureFitConfig(optimizer="gauss_newton")``).

Stage 2's energy is a sum of squares once the texture norm is majorised by its IRLS weights
(:func:`~.least_squares.irls_weights`: ``Σ w·r²`` has the norm's gradient at the current residuals), so its
geometry (pose, translation, identity and expression, in one system; with ``joint_appearance`` the lighting and
albedo coefficients too) can take Gauss-Newton steps instead of Adam's: with ``ρ`` the residuals — the image
term's masked pixels ``r·√(w/|M|)``, the landmarks ``(u − l)·√(c_lands / count)`` in normalised coordinates, the
priors ``√r·c/σ`` — and ``J = ∂ρ/∂x``,

    ``(JᵀJ + λ·(diag JᵀJ + εI)) δ = −Jᵀρ``

per sample, the step kept where the energy goes down (``λ`` shrinks), retried with a larger ``λ`` where it
does not. ``J`` comes from forward-mode automatic differentiation, one column per coordinate (the rasterizer's
visible triangles and the mask held fixed, as in the backward pass); only the image-space term supports it
(the UV term samples the photo with ``grid_sample``, which has no forward-mode derivative).

A converged descent finds the energy's own minimum, so it needs an identity prior (``r_id > 0``): without one,
stage 2's minimum is far from any face (benchmarks/stage2_drift.py and docs/accuracy.md: 25 mm from the truth
after 15 steps on exact photos), and only the few steps of the Adam schedule keep the default fit near stage 1.
"""

from __future__ import annotations

from typing import Callable

import torch

from diffface.linear_algebra import solve_spd

from .image_term import _gather_pixels, masked_pixels
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
        energy_fn, config, model = self.energy_fn, self.energy_fn.config, self.energy_fn.model
        landmark_weight = (config.c_lands / energy_fn.count).sqrt()[:, None, None]
        landmarks = energy_fn.landmark_residuals(points, params.angles) * landmark_weight
        parts = [landmarks.flatten(1), params.alpha_exp / model.exp_std.clamp_min(1e-12) * config.r_exp ** 0.5]
        # frames tied together: a shared identity's and albedo's prior counts once per subject, each frame its share
        share = 1.0 if energy_fn.ties is None else energy_fn.ties.prior_share(points.dtype)[:, None].sqrt()
        if config.r_id:
            parts.append(params.alpha_id / model.id_std.clamp_min(1e-12) * config.r_id ** 0.5 * share)
        if config.r_beta:
            parts.append(params.beta / model.albedo_std.clamp_min(1e-12) * config.r_beta ** 0.5 * share)
        return torch.cat(parts, 1)

    def jacobian(self, to_params: Callable[[dict], object], variables: dict[str, torch.Tensor],
                 names: tuple[str, ...], chunk_size: int | None = None) -> torch.Tensor:
        """``∂residuals/∂(variables[names])`` at the linearisation point by the chain rule through the vertices.

        A masked pixel's residual depends on the shape, pose and albedo only through the screen positions
        ``(u, v, z)``, normals and albedo of its visible triangle's three corners (the triangle held fixed), so
        ``J = L · C``: ``L``, the derivatives of each pixel's colour with respect to its corners (18, and 9 more
        where the albedo moves), by forward mode on a mesh of private triangles (one per masked pixel, its own copy
        of the three corners: one pass of the renderer per corner value, not one per coordinate), and ``C``, the
        corners' derivatives with respect to the coordinates, by forward mode over the vertices alone (no pixels;
        with the landmark and prior residuals; the albedo's through the albedo alone, no shape), ``chunk_size``
        coordinates at a time (default 16). The lighting
        (``"lighting"`` in ``names``) acts on the pixels directly: its 27 columns by forward mode on the private
        triangles. The same Jacobian as :func:`forward_jacobian` of :meth:`__call__` (to rounding).

        Shape:
            variables[name]: (B, K_name); -> (B, N, Σ K_name).
        """
        energy_fn = self.energy_fn
        term = energy_fn.image_term
        shape_names = tuple(name for name in names if name not in ("lighting", "albedo"))
        sh = to_params(variables).sh.detach()
        batch, dtype, device = sh.shape[0], sh.dtype, sh.device
        count = self.index.shape[1]
        corners = term.faces[self.pix_to_face.flatten(1).gather(1, self.index).clamp_min(0)]  # (B, P, 3)

        def at_corners(values):  # (B, V, C) -> (B, P, 3, C)
            flat = corners.reshape(batch, 3 * count, 1).expand(-1, -1, values.shape[-1])
            return values.gather(1, flat).view(batch, count, 3, -1)

        def moved(part_names, values):
            return to_params(dict(variables, **dict(zip(part_names, values))))

        def shape_part(*values):  # the corners' screen positions and normals, the landmark and prior residuals
            params = moved(shape_names, values)
            screen, normals, points = term.project(*energy_fn.shape_and_normals(params), params)
            return at_corners(torch.cat([screen, normals], -1)), self._geometric(points, params)

        with torch.no_grad():
            params = to_params(variables)
            screen, normals, points = term.project(*energy_fn.shape_and_normals(params), params)
            corner_values = torch.cat([at_corners(torch.cat([screen, normals], -1)), at_corners(self.albedo)], -1)

        def albedo_part(value):  # the corners' albedo, the prior residuals (the albedo's own among them)
            params = moved(("albedo",), (value,))
            return at_corners(energy_fn.active.albedo(params.beta)), self._geometric(points, params)

        # L: pixel j of each sample is private triangle j (-1 where the mask's padding is)
        private_faces = torch.arange(3 * count, device=device).view(count, 3)
        slots = torch.arange(count, device=device).expand(batch, count)
        private_map = torch.full((batch, term.size ** 2), -1, dtype=torch.long, device=device).scatter(
            1, self.index, torch.where(self.valid, slots, torch.full_like(slots, -1))).view(self.pix_to_face.shape)

        def pixel_part(corner_values, sh):
            flat = corner_values.reshape(batch, 3 * count, 9)
            rendered, _ = term.render(flat[..., :3].contiguous(), flat[..., 3:6].contiguous(),
                                      flat[..., 6:].contiguous(), sh, faces=private_faces, pix_to_face=private_map)
            return self._texture(term.target.to(dtype), rendered)

        features = 9 if "albedo" in names else 6  # per corner: u, v, z, normal (, albedo)
        basis = torch.eye(3 * features, dtype=dtype, device=device).view(3 * features, 1, 1, 3, features)
        basis = torch.nn.functional.pad(basis, (0, 9 - features)).expand(-1, batch, count, 3, 9)
        local = torch.func.vmap(lambda t: torch.func.jvp(pixel_part, (corner_values, sh),
                                                         (t, torch.zeros_like(sh)))[1])(basis)
        local = local.view(3, features, batch, count, 3)  # corner, corner value, sample, pixel, colour

        step = chunk_size or 16

        def chained(part, part_names, local_part):
            """C by forward mode over ``part``, chunk by chunk of coordinates, contracted with L at once.
            -> {name: (K_name, B, N)}."""
            primals = tuple(variables[name].detach() for name in part_names)
            tangents = _coordinate_tangents(primals)
            texture, geometric = [], []
            for start in range(0, tangents[0].shape[0], step):
                corner_columns, geometric_columns = torch.func.vmap(lambda *t: torch.func.jvp(part, primals, t)[1])(
                    *(tangent[start:start + step] for tangent in tangents))
                texture.append(torch.einsum("ckbpq,tbpck->tbpq", local_part, corner_columns).flatten(2))
                geometric.append(geometric_columns)
            columns = torch.cat([torch.cat(texture), torch.cat(geometric)], 2)
            return dict(zip(part_names, columns.split([value.shape[1] for value in primals])))

        columns = chained(shape_part, shape_names, local[:, :6]) if shape_names else {}
        if "albedo" in names:  # the albedo is linear: no shape or normals in its forward-mode passes
            columns.update(chained(albedo_part, ("albedo",), local[:, 6:]))
        if "lighting" in names:  # acts on the pixels directly
            sh_texture = torch.func.vmap(lambda t: torch.func.jvp(
                pixel_part, (corner_values, sh), (torch.zeros_like(corner_values), t))[1])(_coordinate_tangents((sh,))[0])
            columns["lighting"] = torch.cat([sh_texture, sh_texture.new_zeros(
                sh_texture.shape[:2] + (self.residuals.shape[1] - sh_texture.shape[2],))], 2)
        return torch.cat([columns[name] for name in names]).permute(1, 2, 0)


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
