"""Stage 2 of the method: fit to the image's colours, in the model's UV frame.

``E = E_tex + c_lands·E_lands + r_beta·E_reg,tex + r_exp·E_reg,exp`` (+ ``r_id·E_reg,id``, 0 by default as in the
method; ``r_exp`` deviates from the method's 10: :class:`TextureFitConfig`):

* ``E_tex = ‖M ⊙ (I_target − I_rendered)‖ / |M|`` in a fixed-size UV image
  (:class:`diffface.renderers.VertexRenderer`): ``I_rendered`` is the SH-lit albedo of every vertex,
  ``I_target`` the photo sampled (bilinear) at every projected vertex, ``M`` the texels whose three
  vertices face the camera and project inside the image; ``|M|`` counts those texels. Norms:
  ``l1`` (Σ |·| over texels and channels), ``l2`` (Σ (·)²) and ``l21`` (Σ over texels of the RGB
  vector's l2 norm), each divided by ``|M|``.
* ``E_lands``: the squared reprojection error in normalised image coordinates (pixels / half the
  image's larger side), contour landmarks marched to the silhouette, averaged over the landmarks
  present. (Stage 1 sums over them; here the mean puts ``E_lands`` on the scale of the per-texel
  mean ``E_tex``, which is where the method's ``c_lands = 10`` balances the two: with the sum the
  landmark term outweighs the texture about 4:1 and, without stage 2's identity prior, overfits
  the landmark noise. On the synthetic benchmark: landmark fit 4.01 mm, stage 2 with the sum
  4.07 mm, with the mean 3.88 mm.)
* ``E_reg = Σ (c/σ)²`` Gaussian priors with the model's σ.

``term="image"`` compares in the photo's pixels instead (:mod:`.image_term`: the model rendered by the
differentiable rasterizer and shaded per pixel, masked to the pixels of front-facing triangles, same norms).

Each round optimises one parameter group at a time (lighting, albedo, pose, identity, expression)
with Adam in σ units. Every sample's energy depends on its own parameters only and Adam scales
each coordinate by its own gradient history, so samples in a batch do not influence each other; a
sample whose energy turns non-finite is put back to its last finite state and flagged. Missing SH
lighting is solved exactly before anything else moves (by the lighting group when it comes first).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import torch
import torch.autograd.forward_ad as fwAD

from diffface.checks import check_shape
from diffface.camera import euler_to_rotation, project_points, world_to_camera
from diffface.geometry import rotate_points
from diffface.landmark_marching import march_contour_landmarks
from diffface.lighting import lighting_design, sh_irradiance, solve_sh_lighting
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.renderers import VertexRenderer, depth_visibility

from .active_vertices import ActiveVertices
from .frame_groups import FrameGroups
from .frame_ties import FrameTies
from .gauss_newton import levenberg_marquardt_step
from .gauss_newton_ties import tied_levenberg_marquardt_step
from .free_albedo import FreeAlbedoModel, solve_free_albedo
from .image_term import ImageTerm, solve_image_albedo, solve_image_lighting
from .landmark_fitting import LandmarkFitConfig, fit_landmarks
from .least_squares import NORMS, irls_weights, weighted_least_squares
from .sequence_fitting import SequenceFitConfig

TERMS = ("uv", "image")
VISIBILITY = ("normals", "zbuffer")
OPTIMIZERS = ("adam", "gauss_newton")
JACOBIANS = ("chain", "direct")
GROUPS = ("lighting", "albedo", "pose", "identity", "expression")
#: groups solved exactly (the rendered colours are linear in them); the others take Adam steps
CLOSED_FORM_GROUPS = ("lighting", "albedo")


@dataclass
class TextureFitConfig:
    """Stage-2 settings (the method's defaults for the weights).

    Attributes:
        c_lands: weight of the landmark term.
        r_beta: weight of the albedo prior (r_beta,2); with a free albedo (below) 1, its prior being ``E_alb``.
        r_exp: weight of the expression prior (r_exp,2). Default 0.001, **not the method's 10**: ``E_tex`` here is a
            mean over the texels (about 0.06 on a fit), so 10·Σ(α_exp/σ)² outweighs it by three orders of magnitude
            and flattens every expression (Σ(α_exp/σ)² 14.7 in the truth, 0.001 after stage 2), which the identity
            (no prior in stage 2) then mimics. Measured with ``benchmarks/accuracy_fit.py`` (48 faces × seeds 1-3,
            ICP AUC; r_exp chosen on other seeds): built-in, ``.pts`` landmarks: landmarks 0.792, r_exp 10 0.789,
            0.01 0.798, 0.001 0.800; detector-like landmarks: 0.785 / 0.778 / 0.786 / 0.792; the Surrey model:
            0.713 / 0.630 / 0.745 / 0.749 (docs/accuracy.md).
        r_id: weight of an identity prior ``Σ(α_id/σ)²`` (the method's stage 2 has none: 0).
        norm: ``"l1"``, ``"l2"`` or ``"l21"`` for the texture term.
        uv_size: side of the UV image the texture term is compared in.
        rounds: passes over the groups.
        steps_per_group: Adam steps per group and round.
        groups: the order of the groups in a round.
        learning_rates: Adam step size per group (σ units for identity, expression and albedo;
            SH coefficients; radians and millimetres for the pose).
        active_vertices: compute the energy on the vertices it reads only (:mod:`.active_vertices`: the
            same energy, about twice as fast on a BFM-sized mesh); ``False``: on the whole mesh.
        visibility: which vertices the texture term compares: ``"normals"`` (the method's front-facing
            test) or ``"zbuffer"`` (also not hidden by the mesh itself, e.g. by the nose at large yaw:
            :func:`~diffface.renderers.depth_visibility`, recomputed at the start of each group).
        depth_tolerance_mm: with ``"zbuffer"``, how far behind the z-buffer's surface a vertex may lie and still
            count as visible (the surface is read at the nearest pixel centre, up to half a pixel away).
        term: where the texture term compares: ``"uv"`` (the method's UV frame, per vertex) or ``"image"`` (the
            photo's pixels, the model rendered per pixel: :mod:`.image_term`; always on the whole mesh, its
            visibility is the z-buffer's, so ``uv_size``, ``active_vertices`` and ``visibility`` do not apply).
        image_term_size: with ``"image"``, the side (pixels) of the image compared; the photos are resampled
            to it (0: their own size, the fitting crop).
        free_albedo: for a model without an albedo model, fit a smooth per-vertex albedo in the albedo group
            (:mod:`.free_albedo`: its mean colour fixed at the model's, the lighting carrying brightness and tint);
            ``False``: render the model's constant mean colour, the albedo group skipped.
        free_albedo_smoothness: ``λ_s``, weight of ``Σ_edges ‖d_i − d_j‖²``, ``d`` the albedo's deviation from the
            model's mean colour (larger: smoother; infinite: the mean colour).
        free_albedo_prior: ``λ_p``, weight of the pull to the mean colour, ``mean_i ‖d_i‖²``.
        free_albedo_modes: the smoothest Laplacian eigenvectors per channel the free albedo is built from.
        persistent_adam: keep each group's Adam (its moment estimates and step count) from round to round;
            ``False`` (default): a new Adam at every visit of a group, whose first steps move every coordinate by
            about its learning rate whatever the gradient, so the fit wanders about a minimum
            (``benchmarks/stage2_drift.py``). With 6 rounds (``accuracy_fit.py``, 48 faces × seeds 1-3, chosen on
            seeds 5 and 7): built-in model, ``.pts`` AUC 0.807 against the default's 0.800, detector-like 0.798
            against 0.790, at about twice the time (BFM-sized, batch 32: 1.13 against 2.34 images/s); with 3 rounds
            0.802 / 0.792; the Surrey model: 0.749 either way (docs/accuracy.md).
        optimizer: ``"adam"`` (default: the groups one at a time, ``steps_per_group`` Adam steps each) or
            ``"gauss_newton"``: each round solves the closed-form groups, then takes one Levenberg-Marquardt step on
            the other groups of ``groups`` together (:mod:`.gauss_newton`). Needs ``term="image"`` (its Jacobian is
            forward-mode) and ``r_id > 0`` (a converged descent without an identity prior leaves the face); not
            with frames tied together (videos, photo sets).
        damping: the Levenberg-Marquardt ``λ`` each sample starts with (``optimizer="gauss_newton"``).
        joint_appearance: with ``optimizer="gauss_newton"`` (default ``True``), the step also moves the lighting and
            the albedo coefficients (those of ``groups``; not a free albedo) with the geometry, so that it sees what
            the appearance would absorb of a change of shape; their closed-form solves still start each round.
            ``False``: the geometry alone. ``accuracy_fit.py`` (seeds 1-3 × 48, chosen on seeds 5 and 7): ``.pts``
            AUC 0.847 against 0.842 with the geometry alone, detector-like 0.840 against 0.832 (docs/accuracy.md),
            at about the same cost; with it the method's Fig. 3a ordering holds (l1 and l2,1 above l2 on every
            seed).
        jacobian: how the Levenberg-Marquardt step's Jacobian is computed: ``"chain"`` (default: through the
            triangle corners of the masked pixels, :meth:`~.gauss_newton.Stage2Residuals.jacobian`) or ``"direct"``
            (forward mode through the whole renderer, one pass per coordinate,
            :func:`~.gauss_newton.forward_jacobian`: the reference, several times slower). The same Jacobian to
            rounding.
        jacobian_chunk: ``"chain"``: identity and expression coordinates per pass over the triangles (memory grows
            with it; 0: all); ``"direct"``: coordinates per batched forward-mode pass (0: about 64 sample-columns
            on a CPU, 4096 on a GPU). The Jacobian does not depend on it.
        prior_anneal: the shape priors (``r_id``, ``r_exp``) are this many times stronger in the first round and
            relax geometrically, round by round, to their values in the last (1: constant, the default). A
            continuation: the strongly regularised energy of the first rounds is nearer convex, the last rounds'
            weaker priors let the photo move the shape further. The energies of :attr:`TextureFitResult.history`
            are then each at their own round's weights. With ``optimizer="gauss_newton"``, ``r_id`` = ``r_exp`` =
            1e-4 and ``prior_anneal`` 10 (1e-3 in the first round; chosen on seeds 5 and 7), ``accuracy_fit.py``
            (seeds 1-3 × 48): ``.pts`` AUC 0.862 against 0.847 with 1e-3 constant (gap to the upper bound closed
            34 % against 26 %) and against 0.847 with 1e-4 constant; with detector-like landmarks 0.832 against
            0.840 (a weak final prior lets some faces drift), so an option for accurate landmarks (docs/accuracy.md).
    """

    c_lands: float = 10.0
    r_beta: float = 0.001
    r_exp: float = 0.001
    r_id: float = 0.0
    norm: str = "l21"
    uv_size: int = 64
    rounds: int = 3
    steps_per_group: int = 8
    groups: tuple[str, ...] = GROUPS
    learning_rates: dict = field(default_factory=lambda: {
        "lighting": 0.02, "albedo": 0.1, "pose": 0.004, "translation": 1.0, "identity": 0.02, "expression": 0.02})
    active_vertices: bool = True
    visibility: str = "normals"
    depth_tolerance_mm: float = 5.0
    term: str = "uv"
    image_term_size: int = 0
    free_albedo: bool = True
    free_albedo_smoothness: float = 1e-2
    free_albedo_prior: float = 1.0
    free_albedo_modes: int = 64
    persistent_adam: bool = False
    optimizer: str = "adam"
    damping: float = 1e-2
    joint_appearance: bool = True
    jacobian: str = "chain"
    jacobian_chunk: int = 0
    prior_anneal: float = 1.0

    def __post_init__(self):
        if min(self.c_lands, self.r_beta, self.r_exp, self.r_id) < 0:
            raise ValueError(f"c_lands, r_beta, r_exp and r_id must be >= 0, got {self.c_lands}, {self.r_beta}, "
                             f"{self.r_exp}, {self.r_id}")
        if self.term not in TERMS:
            raise ValueError(f"term must be one of {TERMS}, got {self.term!r}")
        if self.image_term_size < 0:
            raise ValueError(f"image_term_size must be 0 (the photos' size) or positive, got {self.image_term_size}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.visibility not in VISIBILITY:
            raise ValueError(f"visibility must be one of {VISIBILITY}, got {self.visibility!r}")
        if min(self.free_albedo_smoothness, self.free_albedo_prior) < 0 or self.free_albedo_modes < 1 or not (
                self.free_albedo_smoothness + self.free_albedo_prior > 0):
            raise ValueError("free_albedo_smoothness and free_albedo_prior must be >= 0 and not both 0, "
                             f"free_albedo_modes >= 1; got {self.free_albedo_smoothness}, {self.free_albedo_prior}, "
                             f"{self.free_albedo_modes}")
        if self.jacobian not in JACOBIANS:
            raise ValueError(f"jacobian must be one of {JACOBIANS}, got {self.jacobian!r}")
        if not self.prior_anneal >= 1:
            raise ValueError(f"prior_anneal must be >= 1 (1: constant priors), got {self.prior_anneal}")
        if self.jacobian_chunk < 0:
            raise ValueError(f"jacobian_chunk must be 0 (automatic) or positive, got {self.jacobian_chunk}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.optimizer == "gauss_newton" and (self.term != "image" or not self.r_id > 0 or not self.damping > 0):
            raise ValueError("optimizer='gauss_newton' needs term='image' (its Jacobian is forward-mode; the UV term's "
                             "photo sampling has none), r_id > 0 (without an identity prior its converged minimum "
                             f"is far from any face) and damping > 0; got term={self.term!r}, r_id={self.r_id}, "
                             f"damping={self.damping}")
        unknown = set(self.groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown parameter groups {sorted(unknown)}; choose from {GROUPS}")


@dataclass
class TextureFitResult:
    """Fitted parameters, energies per term and flags.

    Shape:
        params: FaceParameters (B, ...) with beta and sh; energy, texture, landmarks, albedo_prior,
        exp_prior: (B,); diverged: (B,) bool (reset to its last finite state); history: list of (B,);
        albedo: (B, V, 3) the fitted free albedo (a model without an albedo model; ``params.beta`` is then (B, 0)),
        else None.
    """

    params: FaceParameters
    energy: torch.Tensor
    texture: torch.Tensor
    landmarks: torch.Tensor
    albedo_prior: torch.Tensor
    exp_prior: torch.Tensor
    diverged: torch.Tensor
    history: list
    albedo: torch.Tensor | None = None


def texture_norm(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm: str = "l21") -> torch.Tensor:
    """``‖M ⊙ (target − rendered)‖ / |M|`` per sample, for the l1, l2 or l2,1 norm.

    Shape:
        rendered, target: (B, C, S, S); mask: (B, 1, S, S) in {0, 1} -> (B,).
    """
    check_shape(rendered, ["B", "C", "S", "S"], "rendered")
    check_shape(target, list(rendered.shape), "target")
    check_shape(mask, [rendered.shape[0], 1, rendered.shape[2], rendered.shape[3]], "mask")
    difference = (target - rendered) * mask
    if norm == "l1":
        total = difference.abs().sum((1, 2, 3))
    elif norm == "l2":
        total = difference.pow(2).sum((1, 2, 3))
    elif norm == "l21":
        total = (difference.pow(2).sum(1) + 1e-12).sqrt().mul(mask[:, 0]).sum((1, 2))
    else:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return total / mask.sum((1, 2, 3)).clamp_min(1.0)


def _channel_rows(uv_images: torch.Tensor, channel: int, parameters: int) -> torch.Tensor:
    """Rows of a design matrix from per-channel UV images. Shape: (B, 3·P, S, S) -> (B, S·S, P)."""
    B = uv_images.shape[0]
    return uv_images[:, channel * parameters:(channel + 1) * parameters].reshape(B, parameters, -1).transpose(1, 2)


def solve_lighting(uv_frame, albedo: torch.Tensor, normals: torch.Tensor, target_uv: torch.Tensor,
                   mask_uv: torch.Tensor, norm: str = "l2", iterations: int = 3) -> torch.Tensor:
    """SH lighting minimising the texture term for fixed shape and albedo (IRLS for l1 and l2,1).

    The rendered UV image is linear in the SH coefficients: texel ``t``, channel ``c`` is
    ``Σ_k w_tk · albedo_c(v_k) · Â∘Y(n(v_k)) · L_c``, so each channel's 9 coefficients solve a
    (re)weighted linear least-squares problem.

    Shape:
        albedo, normals: (B, V, 3) (normals in the lighting frame); target_uv: (B, 3, S, S);
        mask_uv: (B, 1, S, S) -> (B, 27).
    """
    B = albedo.shape[0]
    design_uv = uv_frame(lighting_design(albedo, normals).flatten(2))  # (B, 27, S, S), channel-major
    design = design_uv.flatten(2).transpose(1, 2).unflatten(2, (3, 9))  # (B, S·S, 3, 9)
    colors = target_uv.flatten(2).transpose(1, 2)  # (B, S·S, 3)
    count = mask_uv.sum((1, 2, 3)).clamp_min(1.0)[:, None, None]
    weights = torch.ones_like(target_uv)
    for _ in range(iterations if norm != "l2" else 1):
        sh = solve_sh_lighting(design, colors, (weights * mask_uv).flatten(2).transpose(1, 2) / count, ridge=1e-6)
        rendered = torch.einsum("bnck,bck->bcn", design, sh.reshape(B, 3, 9)).reshape(target_uv.shape)
        weights = irls_weights((target_uv - rendered) * mask_uv, norm)
    return sh


def solve_albedo(model: MorphableModel | ActiveVertices, uv_frame, shading: torch.Tensor, target_uv: torch.Tensor,
                 mask_uv: torch.Tensor, r_beta: float, norm: str = "l2", iterations: int = 3,
                 groups: FrameGroups | None = None) -> torch.Tensor:
    """Albedo coefficients β minimising ``E_tex + r_beta·Σ(β/σ)²`` for fixed shape and lighting.

    The rendered colour is ``(T0 + B·β) ⊙ shading``, linear in β; l1 and l2,1 by IRLS. ``model`` gives
    the albedo model (``albedo_mean``, ``albedo_basis``, ``albedo_std``, ``tex_dims``) of the V vertices.
    With ``groups``: one β per subject, fitted to all its frames (its prior counted once).

    Shape:
        shading: (B, V, 3) SH irradiance per vertex; target_uv: (B, 3, S, S); mask_uv: (B, 1, S, S)
        -> (B, K_tex), or (num_subjects, K_tex) with groups.
    """
    B, V, K = shading.shape[0], shading.shape[1], model.tex_dims
    basis = model.albedo_basis.reshape(V, 3, K).to(shading.dtype)
    design_uv = uv_frame((basis[None] * shading[..., None]).reshape(B, V, 3 * K))  # (B, 3K, S, S), channel-major
    base_uv = uv_frame(model.albedo_mean[None].to(shading.dtype) * shading)  # (B, 3, S, S)
    design = torch.cat([_channel_rows(design_uv, c, K) for c in range(3)], 1)  # (B, 3·S·S, K)
    residual_target = (target_uv - base_uv).reshape(B, -1)
    count = mask_uv.sum((1, 2, 3)).clamp_min(1.0)[:, None]
    ridge = r_beta / model.albedo_std.to(shading.dtype).clamp_min(1e-12).pow(2)
    weights = torch.ones_like(target_uv)
    for _ in range(iterations if norm != "l2" else 1):
        w = (weights * mask_uv).reshape(B, -1) / count
        beta = weighted_least_squares(design, residual_target, w, ridge, groups)
        per_frame = beta if groups is None else beta.index_select(0, groups.subject)
        rendered = base_uv + (design @ per_frame[..., None]).reshape(B, 3, *target_uv.shape[-2:])
        weights = irls_weights((target_uv - rendered) * mask_uv, norm)
    return beta


def _group_variables(group: str) -> tuple[str, ...]:
    """The optimised tensors (:func:`_scaled_variables`' keys) of a parameter group: the pose group moves the
    angles and the translation."""
    return ("pose", "translation") if group == "pose" else (group,)


def _scaled_variables(model: MorphableModel, params: FaceParameters) -> dict[str, torch.Tensor]:
    """The optimised tensors: coefficients in σ units, angles, translation, SH."""
    def leaf(t):
        return t.detach().clone().requires_grad_(True)

    safe = lambda std: std.clamp_min(1e-12)  # noqa: E731
    return {"identity": leaf(params.alpha_id / safe(model.id_std)),
            "expression": leaf(params.alpha_exp / safe(model.exp_std)),
            "albedo": leaf(params.beta / safe(model.albedo_std)),
            "lighting": leaf(params.sh), "pose": leaf(params.angles), "translation": leaf(params.translation)}


def _to_params(model: MorphableModel, variables: dict[str, torch.Tensor], focal: torch.Tensor,
               principal_point: torch.Tensor, ties: FrameTies | None = None) -> FaceParameters:
    """Per-frame parameters (a shared identity or albedo gathered to its subject's frames)."""
    def value(name):
        return variables[name] if ties is None else ties.gather(name, variables[name])

    return FaceParameters(alpha_id=value("identity") * model.id_std,
                          alpha_exp=value("expression") * model.exp_std,
                          translation=value("translation"), angles=value("pose"), focal=focal,
                          principal_point=principal_point, beta=value("albedo") * model.albedo_std,
                          sh=variables["lighting"])


class _Stage2Energy:
    """Evaluates stage 2's energy terms per sample, on the active vertices (:mod:`.active_vertices`)."""

    def __init__(self, model: MorphableModel, images: torch.Tensor, landmarks_2d: torch.Tensor,
                 config: TextureFitConfig, ties: FrameTies | None = None):
        self.model, self.images, self.config, self.ties = model, images, config, ties
        present = torch.isfinite(landmarks_2d).all(-1) & model.landmark_mask[None]
        self.target = torch.where(present[..., None], landmarks_2d, torch.zeros_like(landmarks_2d))
        self.weight = present.to(images.dtype) / (max(images.shape[-2:]) / 2)
        self.count = present.sum(-1).clamp_min(1).to(images.dtype)
        # the image term renders every triangle (any of them can hide another): the whole mesh
        self.image_term = None
        if config.term == "image":
            self.active = ActiveVertices.build(model, config.uv_size, restrict=False)
            self.image_term = ImageTerm(self.active.triangles, images, config.image_term_size)
        else:
            self.active = ActiveVertices.build(model, config.uv_size, restrict=config.active_vertices)
            self.renderer = VertexRenderer(None, self.active.triangles, uv_frame=self.active.uv_frame).to(
                images.device, images.dtype)

    def shape_and_normals(self, params: FaceParameters) -> tuple[torch.Tensor, torch.Tensor]:
        """The rendered vertices and their model-space normals. Shape: -> (B, R, 3), (B, R, 3)."""
        vertices = self.active.shape(params.alpha_id, params.alpha_exp)
        return vertices[:, :self.active.num_rendered], self.active.normals(vertices)

    def fixed_parts(self, params: FaceParameters, group: str) -> dict[str, torch.Tensor]:
        """What ``group`` cannot change, computed once (no gradients): the albedo (its own group is solved
        in closed form), and for the pose and the closed-form groups the vertices and their model-space
        normals."""
        with torch.no_grad():
            fixed = {"albedo": self.active.albedo(params.beta)}
            if group == "pose" or group in CLOSED_FORM_GROUPS:
                fixed["vertices"], fixed["model_normals"] = self.shape_and_normals(params)
            if self.config.visibility == "zbuffer" and self.image_term is None:
                fixed["unoccluded"] = self.unoccluded(params)
        return fixed

    def unoccluded(self, params: FaceParameters) -> torch.Tensor:
        """The rendered vertices no other part of the mesh hides (z-buffer test). Shape: -> (B, R) bool."""
        vertices = self.active.shape(params.alpha_id, params.alpha_exp)  # the triangles' vertices: rendered + ring
        points_camera = world_to_camera(vertices, params.angles, params.translation)
        points = project_points(points_camera, params.focal, params.principal_point)
        visible = depth_visibility(points_camera, points, self.active.triangles, tuple(self.images.shape[-2:]),
                                   self.config.depth_tolerance_mm)
        return visible[:, :self.active.num_rendered]

    def __call__(self, params: FaceParameters, fixed: dict | None = None) -> dict[str, torch.Tensor]:
        """The energy terms; ``fixed``: :meth:`fixed_parts` of the group being optimised (None: compute all)."""
        config, fixed = self.config, fixed or {}
        if "vertices" in fixed:
            vertices, model_normals = fixed["vertices"], fixed["model_normals"]
        else:
            vertices, model_normals = self.shape_and_normals(params)
        albedo = fixed["albedo"] if "albedo" in fixed else self.active.albedo(params.beta)
        if self.image_term is not None:
            image = self.image_term(vertices, model_normals, albedo, params)
            texture = texture_norm(image.rendered, image.target, image.mask, config.norm)
            return self._energy(params, image, texture, image.points)
        camera = dict(angles=params.angles, translation=params.translation, focal=params.focal,
                      principal_point=params.principal_point)
        unoccluded = fixed.get("unoccluded")
        if unoccluded is None and self.config.visibility == "zbuffer":
            unoccluded = self.unoccluded(params)
        out = self.renderer(vertices, albedo, params.sh, self.images, model_normals=model_normals,
                            unoccluded=unoccluded, **camera)
        texture = texture_norm(out.rendered_uv, out.target_uv, out.mask_uv, config.norm)
        return self._energy(params, out, texture, out.uv_points)

    def landmark_residuals(self, points: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """The weighted landmark residuals (normalised coordinates, 0 for missing landmarks): ``E_lands`` is the sum
        of their squares divided by :attr:`count`. The contour landmarks march on the values of ``points`` and
        ``angles`` (also when they carry forward-mode tangents: :mod:`.gauss_newton`).

        Shape:
            points: (B, R, 2) the projected vertices; angles: (B, 3) -> (B, 68, 2).
        """
        return self.landmark_residuals_at(self.landmark_points(points, angles))

    def landmark_points(self, points: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """The landmarks' projections among ``points`` (:meth:`landmark_indices`). Shape: (B, R, 2), (B, 3) ->
        (B, 68, 2)."""
        indices = self.landmark_indices(points, angles)
        return torch.gather(points, 1, indices[..., None].expand(-1, -1, 2))

    def landmark_indices(self, points: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """The landmarks' vertices (local indices), the contour ones marched on the values of ``points`` and
        ``angles`` (their forward-mode tangents ignored). Shape: points (B, R, 2), angles (B, 3) -> (B, 68) long."""
        with torch.no_grad():
            active = self.active
            return march_contour_landmarks(fwAD.unpack_dual(points).primal, fwAD.unpack_dual(angles).primal,
                                           active.landmark_indices, active.contour_landmarks, active.contour_lines)

    def landmark_residuals_at(self, landmark_points: torch.Tensor) -> torch.Tensor:
        """:meth:`landmark_residuals` given the landmarks' projections. Shape: (B, 68, 2) -> (B, 68, 2)."""
        return (landmark_points - self.target) * self.weight[..., None]

    def _energy(self, params: FaceParameters, out, texture: torch.Tensor,
                points: torch.Tensor) -> dict[str, torch.Tensor]:
        """The landmark and prior terms and the total, given the texture term, its renderer's ``out`` and the
        projected vertices ``points`` (B, R, 2)."""
        model, config = self.model, self.config
        landmarks = self.landmark_residuals(points, params.angles).pow(2).sum((1, 2)) / self.count
        albedo_prior = (params.beta / model.albedo_std.clamp_min(1e-12)).pow(2).sum(-1)
        exp_sigma = params.alpha_exp / model.exp_std.clamp_min(1e-12)
        exp_prior = exp_sigma.pow(2).sum(-1)
        id_prior = (params.alpha_id / model.id_std.clamp_min(1e-12)).pow(2).sum(-1)
        terms = {"texture": texture, "landmarks": landmarks, "albedo_prior": albedo_prior, "exp_prior": exp_prior,
                 "id_prior": id_prior, "output": out}
        # a shared albedo's prior counts once per subject; one order of the sum with and without ties keeps an
        # untied fit's energies as they were, bit for bit
        albedo_share = 1.0 if self.ties is None else self.ties.prior_share(texture.dtype)
        energy = (texture + config.c_lands * landmarks + config.r_beta * albedo_prior * albedo_share
                  + config.r_exp * exp_prior)
        if config.r_id:  # a shared identity's prior counts once per subject, like the albedo's
            energy = energy + config.r_id * id_prior * albedo_share
        if self.ties is not None:  # the smoothness rows charge their first frame
            terms["smoothness"] = self.ties.smoothness(params.angles, params.translation, exp_sigma)
            energy = energy + terms["smoothness"]
        return {"energy": energy, **terms}


def fit_texture(model: MorphableModel, images: torch.Tensor, landmarks_2d: torch.Tensor, init: FaceParameters,
                config: TextureFitConfig = TextureFitConfig(), progress=None, groups: FrameGroups | None = None,
                sequence: SequenceFitConfig | None = None) -> TextureFitResult:
    """Batched stage-2 fitting from stage-1 parameters.

    Args:
        model: the morphable model (with an albedo model).
        images: photos in [0, 1].
        landmarks_2d: the observed landmarks in pixels (NaN rows: missing).
        init: starting parameters (stage 1's); missing ``beta`` starts at the mean albedo, missing
            ``sh`` at the exact lighting for the starting shape and albedo.
        config: weights, norm and iteration counts.
        progress: optional ``progress(round_index, energy)``.
        groups, sequence: frames of one subject (a video, a photo set) tied together
            (:mod:`.frame_ties`: one identity and albedo per subject, smooth motion); default: independent.

    Returns:
        :class:`TextureFitResult` (per frame; a shared identity and albedo repeated on its frames).

    Shape:
        images: (B, 3, H, W); landmarks_2d: (B, 68, 2).
    """
    check_shape(images, ["B", 3, "H", "W"], "images")
    check_shape(landmarks_2d, [images.shape[0], 68, 2], "landmarks_2d")
    free_albedo = model.tex_dims == 0 and "albedo" in config.groups and config.free_albedo
    if free_albedo:  # a smooth per-vertex albedo in the albedo model's place (:mod:`.free_albedo`)
        model = FreeAlbedoModel(model, config.free_albedo_modes, config.free_albedo_smoothness,
                                config.free_albedo_prior)
        init, config = replace(init, beta=None), replace(config, r_beta=1.0)
    elif model.tex_dims == 0 and "albedo" in config.groups:
        config = replace(config, groups=tuple(g for g in config.groups if g != "albedo"))
    if not torch.isfinite(images).all():
        raise ValueError("images: contain NaN or infinite values")
    B = images.shape[0]
    start = init
    if start.beta is None:
        start = replace(start, beta=torch.zeros(B, model.tex_dims, dtype=images.dtype, device=images.device))
    # missing lighting is solved exactly, here or by the first group of the first round
    solve_lighting_first = start.sh is None and config.groups[:1] != ("lighting",)
    if start.sh is None:
        start = replace(start, sh=torch.zeros(B, 27, dtype=images.dtype, device=images.device))
    ties = None
    if groups is not None:
        ties = FrameTies(groups, sequence or SequenceFitConfig(), model, config.c_lands, images.dtype, images.device,
                         filter_steps=config.optimizer != "gauss_newton")
    variables = _scaled_variables(model, start)
    if ties is not None:
        variables = {k: ties.initial(k, v.detach()).clone().requires_grad_(True) for k, v in variables.items()}
    focal, principal_point = start.focal.detach(), start.principal_point.detach()
    energy_fn = _Stage2Energy(model, images, landmarks_2d, config, ties)
    as_params = lambda: _to_params(model, variables, focal, principal_point, ties)  # noqa: E731
    if solve_lighting_first:
        with torch.no_grad():
            _solve_appearance("lighting", energy_fn, variables, as_params(), config)
    last_good = {k: v.detach().clone() for k, v in variables.items()}
    diverged = torch.zeros(B, dtype=torch.bool, device=images.device)
    history = []

    optimizers = {}  # per group, kept across rounds with persistent_adam (else stays empty)
    gauss_newton = config.optimizer == "gauss_newton"
    if gauss_newton:  # one joint step per round on the variables of every group that is not closed-form
        geometry = tuple(name for group in config.groups if group not in CLOSED_FORM_GROUPS
                         for name in _group_variables(group))
        if config.joint_appearance:
            geometry += tuple(group for group in ("lighting", "albedo") if group in config.groups
                              and not (group == "albedo" and model.tex_dims == 0))
        # per sample, or per subject when frames are tied (:mod:`.gauss_newton_ties`)
        damping = torch.full((B if ties is None else ties.groups.num_subjects,), config.damping, dtype=images.dtype,
                             device=images.device)
    rounds = config.rounds if ties is None else ties.rounds(config.rounds)
    for round_index in range(rounds):
        energy_fn.config = _round_weights(config, round_index, rounds)
        for group in config.groups:
            if group in CLOSED_FORM_GROUPS:
                with torch.no_grad():
                    _solve_appearance(group, energy_fn, variables, as_params(), config)
                    _reset_bad_samples(variables, last_good, torch.ones_like(diverged), diverged, ties)
                continue
            if gauss_newton:
                continue  # the geometric groups take one joint step after the closed-form ones
            names = _group_variables(group)
            # only the group's tensors need gradients: backward then never runs through what this group
            # cannot change (for the pose, the shape and its vertex normals)
            for name, value in variables.items():
                value.requires_grad_(name in names)
            optimizer = optimizers.get(group)
            if optimizer is None:
                rates = {n: config.learning_rates[n] if ties is None else ties.learning_rate(n, config.learning_rates[n])
                         for n in names}
                optimizer = torch.optim.Adam([{"params": [variables[n]], "lr": rates[n]} for n in names])
                if config.persistent_adam:
                    optimizers[group] = optimizer
            fixed = energy_fn.fixed_parts(as_params(), group)
            for _ in range(config.steps_per_group):
                optimizer.zero_grad(set_to_none=True)
                terms = energy_fn(as_params(), fixed)
                finite = torch.isfinite(terms["energy"])
                torch.where(finite, terms["energy"], torch.zeros_like(terms["energy"])).sum().backward()
                with torch.no_grad():
                    for name in names:
                        ok = finite if ties is None else ties.rows_ok(name, finite)
                        variables[name].grad = torch.nan_to_num(variables[name].grad) * ok.view(-1, 1)
                optimizer.step()
                with torch.no_grad():
                    _reset_bad_samples(variables, last_good, finite, diverged, ties)
        if gauss_newton and geometry:
            step = levenberg_marquardt_step if ties is None else partial(tied_levenberg_marquardt_step, ties=ties)
            step(energy_fn, variables, geometry, lambda v: _to_params(model, v, focal, principal_point), damping,
                 jacobian_chunk=config.jacobian_chunk or None, jacobian=config.jacobian)
        with torch.no_grad():
            terms = energy_fn(as_params())
            _reset_bad_samples(variables, last_good, torch.isfinite(terms["energy"]), diverged, ties)
        history.append(terms["energy"].detach().clone())
        if progress is not None:
            progress(round_index, terms["energy"].detach())

    with torch.no_grad():
        params = _to_params(model, {k: v.detach() for k, v in variables.items()}, focal, principal_point, ties)
        terms = energy_fn(params)
        albedo = None
        if free_albedo:  # the parameters keep the model's own layout, without albedo coefficients
            albedo, params = model.albedo(params.beta), replace(params, beta=params.beta[:, :0])
    return TextureFitResult(params=params, energy=terms["energy"], texture=terms["texture"],
                            landmarks=terms["landmarks"], albedo_prior=terms["albedo_prior"],
                            exp_prior=terms["exp_prior"], diverged=diverged, history=history, albedo=albedo)


def _round_weights(config: TextureFitConfig, round_index: int, rounds: int) -> TextureFitConfig:
    """``config`` with the shape priors of round ``round_index`` of ``rounds`` (``prior_anneal``)."""
    if config.prior_anneal == 1 or rounds < 2:
        return config
    scale = config.prior_anneal ** ((rounds - 1 - round_index) / (rounds - 1))
    return replace(config, r_id=config.r_id * scale, r_exp=config.r_exp * scale)


def _solve_appearance(group: str, energy_fn: "_Stage2Energy", variables: dict, params: FaceParameters,
                      config: TextureFitConfig) -> None:
    """Replace the lighting or albedo by its exact (IRLS) minimiser for the current shape and pose (``params``:
    the variables as per-frame parameters); a shared albedo fits all its subject's frames."""
    model, ties = energy_fn.model, energy_fn.ties
    fixed = energy_fn.fixed_parts(params, group)
    out = energy_fn(params, fixed)["output"]
    if energy_fn.image_term is not None:
        faces = energy_fn.image_term.faces
        if group == "lighting":
            variables["lighting"].copy_(solve_image_lighting(out, faces, config.norm))
        else:
            beta = solve_image_albedo(energy_fn.active, out, faces, params.sh, config.r_beta, config.norm,
                                      groups=ties.groups if ties is not None and ties.shared("albedo") else None)
            variables["albedo"].copy_(beta / model.albedo_std.clamp_min(1e-12))
        return
    albedo, uv_frame = fixed["albedo"], energy_fn.renderer.uv_frame
    # the lighting frame's normals: the renderer's, from the model-space normals computed once above
    normals = rotate_points(fixed["model_normals"], euler_to_rotation(params.angles))
    if group == "lighting":
        variables["lighting"].copy_(solve_lighting(uv_frame, albedo, normals, out.target_uv, out.mask_uv, config.norm))
    else:
        shading = sh_irradiance(normals, params.sh)
        solve = solve_free_albedo if isinstance(model, FreeAlbedoModel) else solve_albedo
        beta = solve(energy_fn.active, uv_frame, shading, out.target_uv, out.mask_uv, config.r_beta,
                     config.norm, groups=ties.groups if ties is not None and ties.shared("albedo") else None)
        variables["albedo"].copy_(beta / model.albedo_std.clamp_min(1e-12))


def _reset_bad_samples(variables: dict, last_good: dict, finite: torch.Tensor, diverged: torch.Tensor,
                       ties: FrameTies | None = None) -> None:
    """Put samples with a non-finite energy or parameters back to their last good state; remember the good ones
    (a shared variable's row: when every frame of its subject is good)."""
    ok = finite.clone()
    for name, value in variables.items():
        ok &= torch.isfinite(value if ties is None else ties.gather(name, value)).all(-1)
    diverged |= ~ok
    for name, value in variables.items():
        rows_ok = ok if ties is None else ties.rows_ok(name, ok)
        value.copy_(torch.where(rows_ok[:, None], value, last_good[name]))
        last_good[name].copy_(value)


def fit_two_stage(model: MorphableModel, images: torch.Tensor, landmarks_2d: torch.Tensor,
                  landmark_config: LandmarkFitConfig = LandmarkFitConfig(),
                  texture_config: TextureFitConfig = TextureFitConfig()) -> TextureFitResult:
    """Stage 1 (landmarks) then stage 2 (texture), the method's full fitting.

    Shape:
        images: (B, 3, H, W) in [0, 1]; landmarks_2d: (B, 68, 2) pixels.
    """
    stage1 = fit_landmarks(model, landmarks_2d, tuple(images.shape[-2:]), landmark_config)
    return fit_texture(model, images, landmarks_2d, stage1.params, texture_config)
