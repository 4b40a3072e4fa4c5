"""Stage 1 of the method: fit pose, identity and expression to 68 2D landmarks.

``E1 = E_lands + r_id · E_reg,id + r_exp · E_reg,exp`` with ``E_lands = Σ_68 ‖(L − P_L) / s‖²`` in
normalised image coordinates (``s`` = half the image's larger side, so the image spans [-1, 1]; with
this scale the method's weights r_id = 0.001, r_exp = 0.1 act like a landmark noise of a few pixels
at 224 px) and Gaussian priors ``E_reg = Σ (α/σ)²``. Each round optimises one parameter group at a time
(pose, then identity, then expression) with batched Levenberg–Marquardt steps; each sample keeps its
own damping, so one bad sample never slows or spoils the others. Contour landmarks march along the
model's parallel lines to the current silhouette before every step.

The focal length and principal point stay at their initial values: from landmarks alone they are
not separable from the distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffface.camera import euler_to_rotation, euler_to_rotation_jacobian, perspective_project
from diffface.checks import check_finite, check_shape
from diffface.landmark_marching import march_contour_landmarks
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters

GROUPS = ("pose", "identity", "expression")


@dataclass
class LandmarkFitConfig:
    """Stage-1 settings (the method's defaults).

    Attributes:
        r_id: weight of the identity prior (r_id,1).
        r_exp: weight of the expression prior (r_exp,1).
        rounds: passes over the groups.
        steps_per_group: Levenberg–Marquardt steps per group and round.
        initial_damping: starting LM damping (relative to the diagonal of JᵀJ).
        focal_px: focal length used when no initial parameters are given (pixels).
        march_contour: move contour landmarks to the silhouette.
    """

    r_id: float = 0.001
    r_exp: float = 0.1
    rounds: int = 6
    steps_per_group: int = 3
    initial_damping: float = 1e-3
    focal_px: float = 1000.0
    march_contour: bool = True


@dataclass
class LandmarkFitResult:
    """Fitted parameters and final energies.

    Shape:
        params: FaceParameters (B, ...); energy, landmark_energy, id_prior, exp_prior: (B,);
        landmark_indices: (B, 68) vertex chosen for each landmark; history: list of (B,) energies.
    """

    params: FaceParameters
    energy: torch.Tensor
    landmark_energy: torch.Tensor
    id_prior: torch.Tensor
    exp_prior: torch.Tensor
    landmark_indices: torch.Tensor
    history: list


def initial_parameters(model: MorphableModel, landmarks_2d: torch.Tensor, image_size: tuple[int, int],
                       focal_px: float) -> FaceParameters:
    """Frontal pose, mean face, distance and offset from the landmarks' spread and centroid.

    Shape:
        landmarks_2d: (B, 68, 2) -> FaceParameters (B, ...).
    """
    B, device, dtype = landmarks_2d.shape[0], landmarks_2d.device, landmarks_2d.dtype
    # per-sample weights over the landmarks both the model defines and the image provides
    present = (torch.isfinite(landmarks_2d).all(-1) & model.landmark_mask[None]).to(dtype)  # (B, 68)
    weight = present / present.sum(-1, keepdim=True).clamp_min(1)
    ref = model.mean_shape[model.landmark_indices.clamp_min(0)].to(dtype)  # (68, 3)
    obs = torch.nan_to_num(landmarks_2d)
    m = weight @ ref  # (B, 3) per-sample centroid of the model's landmarks
    centre = (weight[..., None] * obs).sum(1)  # (B, 2)
    spread_mm = (weight * (ref[None, :, :2] - m[:, None, :2]).norm(dim=-1)).sum(-1)
    spread_px = (weight * (obs - centre[:, None]).norm(dim=-1)).sum(-1)
    focal = torch.full((B, 1), float(focal_px), dtype=dtype, device=device)
    principal = torch.tensor([image_size[1] / 2, image_size[0] / 2], dtype=dtype, device=device).expand(B, 2)
    tz = focal[:, 0] * spread_mm / spread_px.clamp_min(1e-6)
    depth = tz - m[:, 2]
    tx = (centre[:, 0] - principal[:, 0]) * depth / focal[:, 0] - m[:, 0]
    ty = (centre[:, 1] - principal[:, 1]) * depth / focal[:, 0] + m[:, 1]
    zeros = lambda k: torch.zeros(B, k, dtype=dtype, device=device)  # noqa: E731
    return FaceParameters(alpha_id=zeros(model.id_dims), alpha_exp=zeros(model.exp_dims),
                          translation=torch.stack([tx, ty, tz], -1), angles=zeros(3), focal=focal,
                          principal_point=principal.clone())


@dataclass
class _LandmarkTerms:
    """Residuals and analytic Jacobians of the landmark term for one set of landmark vertices.

    Shape:
        residual: (B, 2L); jac_pose: (B, 2L, 6) (angles, translation); jac_id: (B, 2L, K_id);
        jac_exp: (B, 2L, K_exp).
    """

    residual: torch.Tensor
    jac_pose: torch.Tensor
    jac_id: torch.Tensor
    jac_exp: torch.Tensor


def _landmark_terms(pose, a_id, a_exp, mean_lm, id_lm, exp_lm, target, weight, focal, pp, need_jacobian=True):
    """Weighted reprojection residuals ``w·(π(F·R·X + t) − L)`` and their derivatives.

    Shape:
        pose: (B, 6); a_id: (B, K_id); a_exp: (B, K_exp); mean_lm: (B, L, 3);
        id_lm: (B, L, 3, K_id); exp_lm: (B, L, 3, K_exp); target: (B, L, 2); weight: (B, L).
    """
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=pose.dtype, device=pose.device)
    points = mean_lm + torch.einsum("blck,bk->blc", id_lm, a_id) + torch.einsum("blck,bk->blc", exp_lm, a_exp)
    rotation = euler_to_rotation(pose[:, :3]) * flip[:, None]  # F·R, (B, 3, 3)
    cam = points @ rotation.transpose(1, 2) + pose[:, None, 3:]
    z = cam[..., 2].clamp_min(1e-6)
    f = focal[:, None, 0]
    uv = f[..., None] * cam[..., :2] / z[..., None] + pp[:, None]
    residual = ((uv - target) * weight[..., None]).reshape(pose.shape[0], -1)
    if not need_jacobian:
        return _LandmarkTerms(residual, None, None, None)
    # d(uv)/d(cam): (B, L, 2, 3), pre-multiplied by the weight
    wf = (weight * f / z)
    zeros = torch.zeros_like(z)
    d_proj = torch.stack([
        torch.stack([wf, zeros, -wf * cam[..., 0] / z], -1),
        torch.stack([zeros, wf, -wf * cam[..., 1] / z], -1),
    ], -2)
    d_rot = euler_to_rotation_jacobian(pose[:, :3]) * flip[:, None]  # (B, 3, 3, 3): F·dR/dangle_k
    d_cam_angles = torch.einsum("bkij,blj->blik", d_rot, points)  # (B, L, 3, 3)
    jac_angles = d_proj @ d_cam_angles  # (B, L, 2, 3)
    jac_pose = torch.cat([jac_angles, d_proj], -1).reshape(pose.shape[0], -1, 6)
    d_proj_rot = d_proj @ rotation[:, None]  # (B, L, 2, 3)
    jac_id = torch.einsum("blpc,blck->blpk", d_proj_rot, id_lm).reshape(pose.shape[0], -1, id_lm.shape[-1])
    jac_exp = torch.einsum("blpc,blck->blpk", d_proj_rot, exp_lm).reshape(pose.shape[0], -1, exp_lm.shape[-1])
    return _LandmarkTerms(residual, jac_pose, jac_id, jac_exp)


def fit_landmarks(model: MorphableModel, landmarks_2d: torch.Tensor, image_size: tuple[int, int],
                  config: LandmarkFitConfig = LandmarkFitConfig(), init: FaceParameters | None = None,
                  progress=None) -> LandmarkFitResult:
    """Batched stage-1 landmark fitting.

    Args:
        model: the morphable model.
        landmarks_2d: observed iBUG-68 landmarks in pixels; NaN rows mark missing landmarks.
        image_size: (height, width) in pixels, for the default principal point.
        config: weights and iteration counts.
        init: starting parameters; default :func:`initial_parameters`.
        progress: optional callable ``progress(round_index, energy)`` (e.g. a progress bar update).

    Returns:
        :class:`LandmarkFitResult`.

    Shape:
        landmarks_2d: (B, 68, 2).
    """
    check_shape(landmarks_2d, ["B", 68, 2], "landmarks_2d")
    present = torch.isfinite(landmarks_2d).all(-1) & model.landmark_mask[None]
    if not present.any(-1).all():
        raise ValueError("landmarks_2d: some samples have no usable landmark at all")
    target = torch.where(present[..., None], landmarks_2d, torch.zeros_like(landmarks_2d))
    weight = present.to(landmarks_2d.dtype) / (max(image_size) / 2)
    params = init if init is not None else initial_parameters(model, landmarks_2d, image_size, config.focal_px)
    for name in ("translation", "angles", "focal"):
        check_finite(getattr(params, name), f"initial {name}")

    B, K_id, K_exp = landmarks_2d.shape[0], model.id_dims, model.exp_dims
    pose = torch.cat([params.angles, params.translation], -1).detach().clone()
    a_id, a_exp = params.alpha_id.detach().clone(), params.alpha_exp.detach().clone()
    focal, pp = params.focal.detach(), params.principal_point.detach()
    id_basis = model.id_basis.reshape(-1, 3, K_id)
    exp_basis = model.exp_basis.reshape(-1, 3, K_exp)
    prior_weight = {"identity": (config.r_id ** 0.5) / model.id_std, "expression": (config.r_exp ** 0.5) / model.exp_std}
    damping = torch.full((B,), config.initial_damping, dtype=pose.dtype, device=pose.device)
    history = []

    # marching only needs the contour lines' vertices: evaluate and project just those
    line_vertices, local_lines = torch.unique(model.contour_lines.clamp_min(0), return_inverse=True)
    local_lines = torch.where(model.contour_lines >= 0, local_lines, torch.full_like(local_lines, -1))
    static = model.landmark_indices.clamp_min(0)

    def lm_indices(pose, a_id, a_exp):
        if not config.march_contour or model.contour_lines.numel() == 0:
            return static.expand(B, -1)
        verts = (model.mean_shape[line_vertices] + torch.einsum("vck,bk->bvc", id_basis[line_vertices], a_id)
                 + torch.einsum("vck,bk->bvc", exp_basis[line_vertices], a_exp))
        uv, _ = perspective_project(verts, pose[:, :3], pose[:, 3:], focal, pp)
        local = march_contour_landmarks(uv, pose[:, :3], torch.zeros_like(static), model.contour_landmarks,
                                        local_lines)
        chosen = line_vertices[local[:, model.contour_landmarks]]
        indices = static.expand(B, -1).clone()
        indices[:, model.contour_landmarks] = chosen
        return indices

    def gathered(indices):
        return model.mean_shape[indices], id_basis[indices], exp_basis[indices], target, weight, focal, pp

    def energy(variables, data):
        pose_, a_id_, a_exp_ = variables
        terms = _landmark_terms(pose_, a_id_, a_exp_, *data, need_jacobian=False)
        land = terms.residual.pow(2).sum(-1)
        return land + (a_id_ * prior_weight["identity"]).pow(2).sum(-1) + \
            (a_exp_ * prior_weight["expression"]).pow(2).sum(-1), land

    for round_index in range(config.rounds):
        for group in GROUPS:
            if (group == "expression" and K_exp == 0) or (group == "identity" and K_id == 0):
                continue
            g = GROUPS.index(group)
            for _ in range(config.steps_per_group):
                data = gathered(lm_indices(pose, a_id, a_exp))
                variables = [pose, a_id, a_exp]
                terms = _landmark_terms(pose, a_id, a_exp, *data)
                current, _ = energy(variables, data)
                jac = (terms.jac_pose, terms.jac_id, terms.jac_exp)[g]
                jtj = jac.transpose(1, 2) @ jac
                jtr = (jac.transpose(1, 2) @ terms.residual[..., None])[..., 0]
                if group != "pose":  # the group's Gaussian prior residuals: sqrt(r)·c/σ
                    pw = prior_weight[group]
                    jtj = jtj + torch.diag_embed(pw.pow(2).expand(B, -1))
                    jtr = jtr + pw.pow(2) * variables[g]
                diag = torch.diagonal(jtj, dim1=1, dim2=2)
                for _attempt in range(4):
                    system = jtj + torch.diag_embed(damping[:, None] * diag + 1e-9)
                    step = torch.linalg.solve(system, -jtr[..., None])[..., 0]
                    trial = list(variables)
                    trial[g] = variables[g] + step
                    trial_energy, _ = energy(trial, data)
                    better = torch.isfinite(trial_energy) & (trial_energy < current)
                    variables[g] = torch.where(better[:, None], trial[g], variables[g])
                    current = torch.where(better, trial_energy, current)
                    damping = torch.where(better, damping * 0.3, damping * 10).clamp(1e-7, 1e7)
                    if better.all():
                        break
                pose, a_id, a_exp = variables
        history.append(current.detach().clone())
        if progress is not None:
            progress(round_index, current)

    indices = lm_indices(pose, a_id, a_exp)
    final, landmark_energy = energy([pose, a_id, a_exp], gathered(indices))
    result_params = FaceParameters(alpha_id=a_id, alpha_exp=a_exp, translation=pose[:, 3:], angles=pose[:, :3],
                                   focal=focal.clone(), principal_point=pp.clone())
    id_prior = (a_id / model.id_std).pow(2).sum(-1)
    exp_prior = (a_exp / model.exp_std).pow(2).sum(-1) if K_exp else torch.zeros_like(final)
    return LandmarkFitResult(params=result_params, energy=final, landmark_energy=landmark_energy,
                             id_prior=id_prior, exp_prior=exp_prior, landmark_indices=indices, history=history)
