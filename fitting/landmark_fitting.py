"""Stage 1 of the method: fit pose, identity and expression to 68 2D landmarks.

``E1 = E_lands + r_id · E_reg,id + r_exp · E_reg,exp`` with ``E_lands = (1/68) Σ ‖L − P_L‖²`` (pixels²)
and Gaussian priors ``E_reg = Σ (α/σ)²``. Each round optimises one parameter group at a time
(pose, then identity, then expression) with batched Levenberg–Marquardt steps; each sample keeps its
own damping, so one bad sample never slows or spoils the others. Contour landmarks march along the
model's parallel lines to the current silhouette before every step.

The focal length and principal point stay at their initial values: from landmarks alone they are
not separable from the distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import jacrev, vmap

from diffface.camera import perspective_project
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


def _residuals(pose, a_id, a_exp, mean_lm, id_lm, exp_lm, target, weight, focal, pp, id_std, exp_std, r_id, r_exp):
    """Residuals of one sample whose squared sum is E1. pose = (angles, translation) (6,)."""
    verts = mean_lm + (id_lm @ a_id).reshape(-1, 3) + (exp_lm @ a_exp).reshape(-1, 3)
    uv, _ = perspective_project(verts[None], pose[None, :3], pose[None, 3:], focal[None], pp[None])
    land = ((uv[0] - target) * weight[:, None]).reshape(-1)
    return torch.cat([land, (r_id ** 0.5) * a_id / id_std, (r_exp ** 0.5) * a_exp / exp_std])


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
    weight = present.to(landmarks_2d.dtype) / present.sum(-1, keepdim=True).clamp_min(1).sqrt()
    params = init if init is not None else initial_parameters(model, landmarks_2d, image_size, config.focal_px)
    for name in ("translation", "angles", "focal"):
        check_finite(getattr(params, name), f"initial {name}")

    B, K_id, K_exp = landmarks_2d.shape[0], model.id_dims, model.exp_dims
    pose = torch.cat([params.angles, params.translation], -1).detach().clone()
    a_id, a_exp = params.alpha_id.detach().clone(), params.alpha_exp.detach().clone()
    focal, pp = params.focal.detach(), params.principal_point.detach()
    id_basis = model.id_basis.reshape(-1, 3, K_id)
    exp_basis = model.exp_basis.reshape(-1, 3, K_exp)
    damping = torch.full((B,), config.initial_damping, dtype=pose.dtype, device=pose.device)
    arg_of = {"pose": 0, "identity": 1, "expression": 2}
    history = []

    def gather(indices):
        mean_lm = model.mean_shape[indices]
        id_lm = id_basis[indices].reshape(B, -1, K_id)
        exp_lm = exp_basis[indices].reshape(B, -1, K_exp)
        return mean_lm, id_lm, exp_lm

    def lm_indices(pose, a_id, a_exp):
        if not config.march_contour:
            return model.landmark_indices.clamp_min(0).expand(B, -1)
        verts = model.shape(a_id, a_exp)
        uv, _ = perspective_project(verts, pose[:, :3], pose[:, 3:], focal, pp)
        return march_contour_landmarks(uv, pose[:, :3], model.landmark_indices.clamp_min(0),
                                       model.contour_landmarks, model.contour_lines)

    batched_res = vmap(_residuals, in_dims=(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None, None, None))

    def energy_of(variables, data):
        r = batched_res(*variables, *data, model.id_std, model.exp_std, config.r_id, config.r_exp)
        return (r ** 2).sum(-1), r

    for round_index in range(config.rounds):
        for group in GROUPS:
            if (group == "expression" and K_exp == 0) or (group == "identity" and K_id == 0):
                continue
            for _ in range(config.steps_per_group):
                indices = lm_indices(pose, a_id, a_exp)
                data = (*gather(indices), target, weight, focal, pp)
                variables = [pose, a_id, a_exp]
                energy, r = energy_of(variables, data)
                g = arg_of[group]
                jac = vmap(jacrev(_residuals, argnums=g),
                           in_dims=(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, None, None, None))(
                    *variables, *data, model.id_std, model.exp_std, config.r_id, config.r_exp)
                jtj = jac.transpose(1, 2) @ jac
                jtr = (jac.transpose(1, 2) @ r[..., None])[..., 0]
                diag = torch.diagonal(jtj, dim1=1, dim2=2)
                for _attempt in range(4):
                    system = jtj + torch.diag_embed(damping[:, None] * diag + 1e-9)
                    step = torch.linalg.solve(system, -jtr[..., None])[..., 0]
                    trial = list(variables)
                    trial[g] = variables[g] + step
                    trial_energy, _ = energy_of(trial, data)
                    better = torch.isfinite(trial_energy) & (trial_energy < energy)
                    variables[g] = torch.where(better[:, None], trial[g], variables[g])
                    energy = torch.where(better, trial_energy, energy)
                    damping = torch.where(better, damping * 0.3, damping * 10).clamp(1e-7, 1e7)
                    if better.all():
                        break
                pose, a_id, a_exp = variables
        history.append(energy.detach().clone())
        if progress is not None:
            progress(round_index, energy)

    indices = lm_indices(pose, a_id, a_exp)
    data = (*gather(indices), target, weight, focal, pp)
    energy, r = energy_of([pose, a_id, a_exp], data)
    n_land = r.shape[1] - K_id - K_exp
    result_params = FaceParameters(alpha_id=a_id, alpha_exp=a_exp, translation=pose[:, 3:], angles=pose[:, :3],
                                   focal=focal.clone(), principal_point=pp.clone())
    id_prior = (a_id / model.id_std).pow(2).sum(-1)
    exp_prior = (a_exp / model.exp_std).pow(2).sum(-1) if K_exp else torch.zeros_like(energy)
    return LandmarkFitResult(params=result_params, energy=energy, landmark_energy=(r[:, :n_land] ** 2).sum(-1),
                             id_prior=id_prior, exp_prior=exp_prior, landmark_indices=indices, history=history)
