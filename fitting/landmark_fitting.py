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

from diffface.camera import euler_to_rotation, euler_to_rotation_jacobian, model_to_camera_flip
from diffface.checks import check_finite, check_shape
from diffface.linear_algebra import solve_spd
from diffface.landmark_marching import CHIN_LANDMARK, image_axis_of_model_x
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.threads import torch_threads

GROUPS = ("pose", "identity", "expression")
NUM_LANDMARKS = 68  # the 68-point annotation
NUM_RESIDUALS = 2 * NUM_LANDMARKS  # u and v of each landmark
NUM_POINT_COORDS = 3 * NUM_LANDMARKS  # x, y and z of each landmark's model point


@dataclass
class LandmarkFitConfig:
    """Stage-1 settings (the method's defaults).

    Attributes:
        r_id: weight of the identity prior (r_id,1).
        r_exp: weight of the expression prior (r_exp,1).
        rounds: passes over the groups.
        pose_steps: Levenberg–Marquardt steps on the pose per round.
        steps_per_group: Levenberg–Marquardt steps on identity and on expression per round (the landmarks
            are nearly linear in them, so one step per round gets as low as more: on 128 synthetic faces,
            3 rounds of 2 + 1 + 1 steps end at a lower mean energy, 0.06880, than 6 rounds of 3 + 3 + 3,
            0.06943, in a fifth of the steps).
        initial_damping: starting LM damping (relative to the diagonal of JᵀJ).
        focal_px: focal length used when no initial parameters are given (pixels).
        march_contour: move contour landmarks to the silhouette.
        cpu_threads: torch intra-op threads while fitting on the CPU (restored afterwards): ``n > 0``
            threads; 0: torch's setting; -1 (default): one thread for batches of up to
            ``SMALL_BATCH`` faces, torch's setting above. Stage 1's tensors are small (68 landmarks a
            face): on 2 idle cores one thread and two are within 25 % of each other at batch 32 (512
            against 474 faces/s on one VM, 652 against 810 on another), two win at batch 256 (729
            against 594); but when other processes load the cores, two OpenMP threads collapse (8.5
            faces/s at batch 32 against 527 with one; ``benchmarks/bench_fit.py``).
    """

    r_id: float = 0.001
    r_exp: float = 0.1
    rounds: int = 3
    pose_steps: int = 2
    steps_per_group: int = 1
    initial_damping: float = 1e-3
    focal_px: float = 1000.0
    march_contour: bool = True
    cpu_threads: int = -1


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
                       focal_px: float | torch.Tensor, principal_point: torch.Tensor | None = None) -> FaceParameters:
    """Frontal pose, mean face, distance and offset from the landmarks' spread and centroid.

    Shape:
        landmarks_2d: (B, 68, 2); focal_px: a number or (B, 1); principal_point: (B, 2) (default: the image
        centre) -> FaceParameters (B, ...).
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
    if isinstance(focal_px, torch.Tensor):
        focal = focal_px.to(device, dtype).reshape(B, 1).clone()
    else:
        focal = torch.full((B, 1), float(focal_px), dtype=dtype, device=device)
    if principal_point is None:
        principal = torch.tensor([image_size[1] / 2, image_size[0] / 2], dtype=dtype, device=device).expand(B, 2)
    else:
        principal = principal_point.to(device, dtype).reshape(B, 2)
    tz = focal[:, 0] * spread_mm / spread_px.clamp_min(1e-6)
    depth = tz - m[:, 2]
    tx = (centre[:, 0] - principal[:, 0]) * depth / focal[:, 0] - m[:, 0]
    ty = (centre[:, 1] - principal[:, 1]) * depth / focal[:, 0] + m[:, 1]
    zeros = lambda k: torch.zeros(B, k, dtype=dtype, device=device)  # noqa: E731
    return FaceParameters(alpha_id=zeros(model.id_dims), alpha_exp=zeros(model.exp_dims),
                          translation=torch.stack([tx, ty, tz], -1), angles=zeros(3), focal=focal,
                          principal_point=principal.clone())


MAX_DAMPING_TRIES = 4
#: largest batch stage 1 fits on one CPU thread by default (LandmarkFitConfig.cpu_threads)
SMALL_BATCH = 64


@dataclass
class _LandmarkRows:
    """The rows of the model that stage 1 ever touches: the landmark vertices and the contour lines.

    Everything per step is computed on these ``Vc`` candidate vertices only (a few hundred), never
    on the full mesh; per-sample landmark vertices are local indices into them.

    Shape:
        vertices: (Vc,) model vertex of each candidate; mean: (1, 3·Vc) and basis_t: (K_id + K_exp, 3·Vc),
        coordinate-major (all x, then all y, then all z), so points come out as (B, 3, Vc);
        id_basis: (Vc, 3, K_id); exp_basis: (Vc, 3, K_exp); static: (68,) local landmark vertices;
        contour_landmarks: (C,); lines: (C, K) local line vertices (padding clamped to 0);
        line_penalty: (C, K) 0 on the lines, -inf on the padding; side: (C, 1) -1 left of the chin, +1 right.
    """

    vertices: torch.Tensor
    mean: torch.Tensor
    basis_t: torch.Tensor
    id_basis: torch.Tensor
    exp_basis: torch.Tensor
    static: torch.Tensor
    contour_landmarks: torch.Tensor
    lines: torch.Tensor
    line_penalty: torch.Tensor
    side: torch.Tensor

    @staticmethod
    def build(model: MorphableModel, march: bool, dtype: torch.dtype) -> "_LandmarkRows":
        static = model.landmark_indices.clamp_min(0)
        lines = model.contour_lines if march else model.contour_lines[:0]
        vertices, local = torch.unique(torch.cat([static, lines.clamp_min(0).flatten()]), return_inverse=True)
        V, Vc, K_id, K_exp = model.num_vertices, vertices.shape[0], model.id_dims, model.exp_dims
        id_basis = model.id_basis.reshape(V, 3, K_id)[vertices].to(dtype)
        exp_basis = model.exp_basis.reshape(V, 3, K_exp)[vertices].to(dtype)
        basis_t = torch.cat([id_basis, exp_basis], -1).permute(2, 1, 0).reshape(K_id + K_exp, 3 * Vc).contiguous()
        penalty = torch.zeros(lines.shape, dtype=dtype, device=vertices.device)
        return _LandmarkRows(
            vertices=vertices, mean=model.mean_shape[vertices].to(dtype).T.reshape(1, -1), basis_t=basis_t,
            id_basis=id_basis, exp_basis=exp_basis, static=local[:NUM_LANDMARKS],
            contour_landmarks=model.contour_landmarks if march else model.contour_landmarks[:0],
            lines=local[NUM_LANDMARKS:].reshape(lines.shape), line_penalty=penalty.masked_fill(lines < 0, -torch.inf),
            side=torch.where(model.contour_landmarks[:lines.shape[0]] < CHIN_LANDMARK, -1.0, 1.0).to(dtype)[:, None])

    def points(self, a_id: torch.Tensor, a_exp: torch.Tensor) -> torch.Tensor:
        """Model-space candidate vertices, coordinate-major. Shape: (B, K_id), (B, K_exp) -> (B, 3, Vc)."""
        coefficients = torch.cat([a_id, a_exp], -1)
        return torch.addmm(self.mean, coefficients, self.basis_t).view(a_id.shape[0], 3, -1)

    def march(self, cam: torch.Tensor, rotation: torch.Tensor, focal: torch.Tensor, pp: torch.Tensor) -> torch.Tensor:
        """Local landmark vertices with the contour landmarks on the silhouette.

        The same rule as :func:`diffface.landmark_marching.march_contour_landmarks` (the reference the
        tests compare with), on the projected line vertices only.

        Shape:
            cam: (B, Vc, 3) camera-space candidates; rotation: (B, 3, 3) ``R`` (unflipped) -> (B, 68).
        """
        B = cam.shape[0]
        local = self.static.expand(B, -1)
        if self.lines.numel() == 0:
            return local
        line_cam = cam.index_select(1, self.lines.flatten()).view(B, *self.lines.shape, 3)  # (B, C, K, 3)
        uv = focal[:, None, None] * line_cam[..., :2] / _depth(line_cam)[..., None] + pp[:, None, None]
        axis = image_axis_of_model_x(rotation)
        score = (uv * axis[:, None, None]).sum(-1) * self.side + self.line_penalty
        chosen = torch.gather(self.lines.expand(B, -1, -1), 2, score.argmax(-1, keepdim=True))[..., 0]
        local = local.clone()
        local[:, self.contour_landmarks] = chosen
        return local


def _depth(cam: torch.Tensor) -> torch.Tensor:
    return cam[..., 2].clamp_min(1e-6)


def _residuals(cam, target, weight, focal, pp):
    """Weighted reprojection residuals ``w·(π(X_cam) − L)``. Shape: cam (B, L, 3) -> (B, L, 2)."""
    uv = focal[:, None] * cam[..., :2] / _depth(cam)[..., None] + pp[:, None]
    return (uv - target) * weight[..., None]


def _projection_jacobian(cam, weight, focal):
    """``d(w·uv)/d(X_cam)`` per landmark. Shape: cam (B, L, 3); weight (B, L); focal (B, 1) -> (B, L, 2, 3)."""
    z = _depth(cam)
    scale = (weight * focal / z)[..., None, None]
    q = (cam[..., :2] / z[..., None])[..., None]  # (B, L, 2, 1)
    eye = torch.eye(2, 3, dtype=cam.dtype, device=cam.device)
    last = torch.tensor([0.0, 0.0, 1.0], dtype=cam.dtype, device=cam.device)
    return scale * (eye - q * last)


def _camera_rotation(angles: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rotation = euler_to_rotation(angles)
    return rotation, rotation * flip[:, None]  # R and F·R


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
    threads = config.cpu_threads
    if threads < 0:
        threads = 1 if landmarks_2d.shape[0] <= SMALL_BATCH else 0
    with torch_threads(threads if landmarks_2d.device.type == "cpu" else None):
        return _fit_landmarks(model, landmarks_2d, image_size, config, init, progress)


@dataclass
class _Linearisation:
    """The landmarks at the current parameters and, for one group, the Jacobian of their weighted residuals.

    Shape:
        local: (B, 68) marched landmark rows; cam, points: (B, 68, 3) camera and model points; cam_rotation:
        (B, 3, 3) F·R; basis: (B, 68, 3, K) the group's basis rows (None for the pose and without a group);
        jacobian: (B, 136, K) (None without a group).
    """

    local: torch.Tensor
    cam: torch.Tensor
    points: torch.Tensor
    cam_rotation: torch.Tensor
    basis: torch.Tensor | None = None
    jacobian: torch.Tensor | None = None


class _Stage1Problem:
    """Stage 1's least-squares problem for a batch: the weighted landmark residuals, their Jacobians per group
    and the Gaussian priors (``sqrt(r)·c/σ`` residuals), with one Levenberg-Marquardt step per call of
    :meth:`step`."""

    def __init__(self, model: MorphableModel, landmarks_2d: torch.Tensor, present: torch.Tensor,
                 image_size: tuple[int, int], config: LandmarkFitConfig, focal: torch.Tensor,
                 principal_point: torch.Tensor):
        dtype = landmarks_2d.dtype
        self.batch = landmarks_2d.shape[0]
        self.target = torch.where(present[..., None], landmarks_2d, torch.zeros_like(landmarks_2d))
        self.weight = present.to(dtype) / (max(image_size) / 2)
        self.focal, self.pp = focal, principal_point
        self.march = config.march_contour and model.contour_lines.numel() > 0
        self.rows = _LandmarkRows.build(model, self.march, dtype)
        self.flip = model_to_camera_flip(focal)
        self.prior_weight = {"identity": ((config.r_id ** 0.5) / model.id_std).to(dtype),
                             "expression": ((config.r_exp ** 0.5) / model.exp_std).to(dtype)}
        self.group_basis = {"identity": self.rows.id_basis, "expression": self.rows.exp_basis}
        # energies are sums of 136 squares: below this relative change, a decrease is rounding
        self.precision = 64 * torch.finfo(dtype).eps

    def prior(self, a: torch.Tensor, group: str) -> torch.Tensor:
        return (a * self.prior_weight[group]).pow(2).sum(-1)

    def residuals(self, cam: torch.Tensor, pick=lambda t: t) -> torch.Tensor:
        """Weighted landmark residuals of camera points ``cam`` (of the samples ``pick`` selects)."""
        return _residuals(cam, pick(self.target), pick(self.weight), pick(self.focal), pick(self.pp))

    def linearise(self, pose: torch.Tensor, a_id: torch.Tensor, a_exp: torch.Tensor,
                  group: str | None) -> _Linearisation:
        """March, then the landmarks' model and camera points and, for ``group``, the Jacobian of the
        weighted landmark residuals, with F·R and the group's landmark basis rows."""
        B, rows, flip = self.batch, self.rows, self.flip
        rotation, cam_rotation = _camera_rotation(pose[:, :3], flip)
        points_t = rows.points(a_id, a_exp)
        # R·X on (B, 3, Vc): ten times faster than X·Rᵀ on (B, Vc, 3), whose inner dimension is 3
        points, cam = points_t.transpose(1, 2), torch.baddbmm(pose[:, 3:, None], cam_rotation, points_t).transpose(1, 2)
        local = rows.march(cam, rotation, self.focal, self.pp) if self.march else rows.static.expand(B, -1)
        gather = local[..., None].expand(-1, -1, 3)
        cam_lm, points_lm = cam.gather(1, gather), points.gather(1, gather)
        if group is None:
            return _Linearisation(local, cam_lm, points_lm, cam_rotation)
        projection = _projection_jacobian(cam_lm, self.weight, self.focal)  # (B, 68, 2, 3)
        if group == "pose":  # d(F·R·X)/dangle_k = F·dR/dangle_k·X; d/dt = I
            d_rotation = euler_to_rotation_jacobian(pose[:, :3]) * flip[:, None]  # (B, k, i, j)
            d_angles = (points_lm @ d_rotation.permute(0, 3, 2, 1).reshape(B, 3, 9)).view(B, NUM_LANDMARKS, 3, 3)
            basis_lm = None
            jac = torch.cat([projection @ d_angles, projection], -1)
        else:  # d(F·R·X)/dα = F·R·A for the landmark rows A of the basis
            rows_basis = self.group_basis[group]  # (Vc, 3, K): one index_select of whole rows is the fast gather
            basis_lm = rows_basis.view(rows_basis.shape[0], -1).index_select(0, local.flatten()).view(
                B, NUM_LANDMARKS, 3, -1)
            jac = (projection @ cam_rotation[:, None]) @ basis_lm
        return _Linearisation(local, cam_lm, points_lm, cam_rotation, basis_lm, jac.reshape(B, NUM_RESIDUALS, -1))

    def step(self, group: str, variables: dict[str, torch.Tensor]) -> torch.Tensor:
        """One Levenberg-Marquardt step of ``group``. ``variables`` holds ``pose`` (B, 6: angles, translation),
        ``identity`` (B, K_id), ``expression`` (B, K_exp) and the per-sample ``damping`` (B,); the group's entry and
        the damping are replaced. Returns the energy after the step. Shape: -> (B,)."""
        pose, a_id, a_exp = variables["pose"], variables["identity"], variables["expression"]
        lin = self.linearise(pose, a_id, a_exp, group)
        residual = self.residuals(lin.cam).reshape(self.batch, -1, 1)
        # one product gives JᵀJ and Jᵀr; the energy is summed like the trial energies below,
        # so that a step is never accepted or rejected on rounding differences alone
        normal = lin.jacobian.transpose(1, 2) @ torch.cat([lin.jacobian, residual], -1)
        jtj, jtr, current = normal[..., :-1], normal[..., -1], residual.pow(2).sum((1, 2))
        variable = variables[group]
        if group == "pose":
            fixed_prior = self.prior(a_id, "identity") + self.prior(a_exp, "expression")
            current = current + fixed_prior
        else:  # the group's Gaussian prior residuals: sqrt(r)·c/σ
            fixed_prior = self.prior(a_exp, "expression") if group == "identity" else self.prior(a_id, "identity")
            current = current + fixed_prior + self.prior(variable, group)
            pw2 = self.prior_weight[group].pow(2)
            jtj = jtj + torch.diag_embed(pw2.expand(self.batch, -1))
            jtr = jtr + pw2 * variable
        variable, current, damping = self._damped_update(group, lin, jtj, jtr, variable, current, fixed_prior,
                                                         variables["damping"])
        variables[group] = variable
        variables["damping"] = damping
        return current

    def _trial_energy(self, group: str, lin: _Linearisation, step: torch.Tensor, trial: torch.Tensor,
                      fixed_prior: torch.Tensor, pick) -> torch.Tensor:
        """The energy at ``trial`` = the picked samples' variable + ``step``, from the linearisation's points."""
        if group == "pose":
            _, trial_rotation = _camera_rotation(trial[:, :3], self.flip)
            trial_cam = pick(lin.points) @ trial_rotation.transpose(1, 2) + trial[:, None, 3:]
            trial_prior = pick(fixed_prior)
        else:
            delta = (pick(lin.basis).view(step.shape[0], NUM_POINT_COORDS, -1) @ step).view(-1, NUM_LANDMARKS, 3)
            trial_cam = pick(lin.cam) + delta @ pick(lin.cam_rotation).transpose(1, 2)
            trial_prior = pick(fixed_prior) + self.prior(trial, group)
        return self.residuals(trial_cam, pick).pow(2).sum((1, 2)) + trial_prior

    def _damped_update(self, group, lin, jtj, jtr, variable, current, fixed_prior, damping):
        """Per-sample LM: a sample whose step is rejected retries with 10x damping (up to MAX_DAMPING_TRIES
        solves); the others keep their step and stop, so no sample's path depends on the rest of the batch.
        Returns the new variable, energy and damping."""
        B = self.batch
        diag = torch.diagonal(jtj, dim1=1, dim2=2)
        chosen = None  # samples still trying; None: all of them
        for _ in range(MAX_DAMPING_TRIES):
            pick = (lambda t: t) if chosen is None else (lambda t: t[chosen])  # noqa: E731
            system = pick(jtj) + torch.diag_embed(pick(damping)[:, None] * pick(diag) + 1e-9)
            step, ok = solve_spd(system, -pick(jtr)[..., None])
            trial = pick(variable) + step[..., 0]
            trial_energy = self._trial_energy(group, lin, step, trial, fixed_prior, pick)
            before = pick(current)
            better = torch.isfinite(trial_energy) & (trial_energy < before) & ok
            accepted = torch.where(better[:, None], trial, pick(variable))
            new_energy = torch.where(better, trial_energy, before)
            new_damping = torch.where(better, pick(damping) * 0.3, pick(damping) * 10).clamp(1e-7, 1e7)
            if chosen is None:
                # a step predicted to lower the energy by less than its rounding error (a
                # sample at its minimum, to working precision) is rejected whatever the damping:
                # give such samples the damping of the remaining rejections without solving
                predicted = -(step[..., 0] * jtr).sum(-1)
                futile = ~better & ~(predicted > self.precision * before)
                new_damping = torch.where(futile, damping * 10 ** MAX_DAMPING_TRIES, new_damping).clamp(1e-7, 1e7)
                variable, current, damping = accepted, new_energy, new_damping
                retry = ~better & ~futile
            else:
                variable, current, damping = (t.index_copy(0, chosen, v) for t, v in
                                              ((variable, accepted), (current, new_energy), (damping, new_damping)))
                retry = torch.zeros(B, dtype=torch.bool, device=better.device).index_copy(0, chosen, ~better)
            if not retry.any():
                break
            chosen = retry.nonzero()[:, 0]
        return variable, current, damping


def _fit_landmarks(model: MorphableModel, landmarks_2d: torch.Tensor, image_size: tuple[int, int],
                   config: LandmarkFitConfig, init: FaceParameters | None, progress) -> LandmarkFitResult:
    """:func:`fit_landmarks` with the threads set."""
    present = torch.isfinite(landmarks_2d).all(-1) & model.landmark_mask[None]
    if not present.any(-1).all():
        raise ValueError("landmarks_2d: some samples have no usable landmark at all")
    dtype = landmarks_2d.dtype
    params = init if init is not None else initial_parameters(model, landmarks_2d, image_size, config.focal_px)
    for name in ("translation", "angles", "focal"):
        check_finite(getattr(params, name), f"initial {name}")

    B, K_id, K_exp = landmarks_2d.shape[0], model.id_dims, model.exp_dims
    variables = {"pose": torch.cat([params.angles, params.translation], -1).detach().to(dtype).clone(),
                 "identity": params.alpha_id.detach().to(dtype).clone(),
                 "expression": params.alpha_exp.detach().to(dtype).clone(),
                 "damping": torch.full((B,), config.initial_damping, dtype=dtype, device=params.angles.device)}
    focal, pp = params.focal.detach().to(dtype), params.principal_point.detach().to(dtype)
    problem = _Stage1Problem(model, landmarks_2d, present, image_size, config, focal, pp)
    history = []
    for round_index in range(config.rounds):
        for group in GROUPS:
            if (group == "expression" and K_exp == 0) or (group == "identity" and K_id == 0):
                continue
            for _ in range(config.pose_steps if group == "pose" else config.steps_per_group):
                current = problem.step(group, variables)
        history.append(current.detach().clone())
        if progress is not None:
            progress(round_index, current)

    pose, a_id, a_exp = variables["pose"], variables["identity"], variables["expression"]
    final_points = problem.linearise(pose, a_id, a_exp, None)
    landmark_energy = problem.residuals(final_points.cam).pow(2).sum((1, 2))
    final = landmark_energy + problem.prior(a_id, "identity") + problem.prior(a_exp, "expression")
    result_params = FaceParameters(alpha_id=a_id, alpha_exp=a_exp, translation=pose[:, 3:], angles=pose[:, :3],
                                   focal=focal.clone(), principal_point=pp.clone())
    id_prior = (a_id / model.id_std).pow(2).sum(-1)
    exp_prior = (a_exp / model.exp_std).pow(2).sum(-1) if K_exp else torch.zeros_like(final)
    return LandmarkFitResult(params=result_params, energy=final, landmark_energy=landmark_energy,
                             id_prior=id_prior, exp_prior=exp_prior,
                             landmark_indices=problem.rows.vertices[final_points.local], history=history)
