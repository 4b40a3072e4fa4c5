"""Stage 1 over videos and photo sets: one identity per subject, smooth motion between frames.

For a batch of frames grouped by subject (:class:`~.frame_groups.FrameGroups`) the landmark energy of
:mod:`.landmark_fitting` becomes, per subject ``s``::

    E_s = Σ_{t∈s} [E_lands,t + r_exp·Σ(α_exp,t/σ)²] + r_id·Σ(α_id,s/σ)²
          + Σ_rows [λ_rot·‖D·angles‖² + λ_tr·‖D·t‖² + λ_exp·‖D·(α_exp/σ)‖²]

* **shared identity**: one ``α_id,s`` for all the subject's frames; its Gaussian prior counts once per
  subject, not once per frame (``share_identity=False``: one identity per frame, as ``fit_landmarks``);
* **temporal smoothness** on ordered subjects (videos): ``D`` is the first or second (default)
  difference over neighbouring frames; the second difference penalises acceleration, so a head
  turning at constant speed is not held back.

Each round optimises one group at a time with Levenberg–Marquardt steps as stage 1 does. The
identity step sums the frames' normal equations per subject (a ``K_id × K_id`` system per subject).
The pose and expression steps couple neighbouring frames through ``DᵀD``: their normal equations
(block diagonal over frames plus ``λ·DᵀD``) are solved by conjugate gradients preconditioned with the
frames' own blocks, which is exact in one iteration when nothing couples the frames. Damping, the
accept/reject test and the energy are per subject, so subjects in a batch never influence each other.

``frozen`` frames keep their pose and expression (their neighbours still see them through ``D``):
online fitting (:class:`OnlineLandmarkFitter`) and long videos fitted in chunks use it to continue a
sequence from frames already fitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from diffface.checks import check_shape
from diffface.linear_algebra import solve_spd
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters
from diffface.threads import torch_threads

from .frame_groups import DifferenceOperator, FrameGroups
from .landmark_fitting import (MAX_DAMPING_TRIES, NUM_POINT_COORDS, LandmarkFitConfig, _camera_rotation,
                               _Linearisation, _Stage1Problem, fit_landmarks,
                               initial_parameters)
from .subject_cg import subject_conjugate_gradients

SEQUENCE_GROUPS = ("pose", "identity", "expression")


@dataclass
class SequenceFitConfig:
    """How frames of one subject are tied together (stage 1 and stage 2).

    The smoothness weights multiply squared differences of the parameters (radians, millimetres, expression
    σ units) in the units of the landmark energy (squared normalised image coordinates: a pixel at the
    224-px crop is 1/112).

    Attributes:
        share_identity: one identity (and, in stage 2, one albedo) per subject.
        r_id: the weight of a shared identity's Gaussian prior (counted once per subject); None: stage 1's
            ``r_id``. Default 0.01, ten times stage 1's per-image 0.001: on synthetic sequences (4 × 60 frames,
            seed 7) the shared identity's mean vertex error was 3.96 / 3.84 / 3.81 / 3.86 mm at 0.001 / 0.003 /
            0.01 / 0.03 with exact landmarks and 4.03 / - / 3.79 / - mm with noisy ones (r_id 0.1: 3.95): the
            frames do not add independent evidence on every identity direction (depth from 2D landmarks stays
            ambiguous), so the prior must stay near the strength a single image's fit gets (see
            ``benchmarks/bench_video.py`` for the check on other seeds).
        smooth: the temporal smoothness prior on ordered subjects (videos).
        smooth_order: 1 (velocity) or 2 (acceleration, default).
        smooth_rotation: λ on the squared differences of the three angles.
        smooth_translation: λ on the squared differences of the translation.
        smooth_expression: λ on the squared differences of the expression coefficients (σ units).
        stage2_step_filter: ``μ``: with ``smooth``, stage 2's Adam steps the angles, translation and expression through
            the low-pass filter ``(I + μ·DᵀD)⁻¹`` (:func:`~.frame_ties.low_pass_filter`); 0: steps each frame's values
            directly. Default 10, chosen on one sequence (seed 9's second, noisy landmarks: mean error 2.67 / 2.11 /
            2.14 / 2.14 mm at μ = 0 / 10 / 100 / 1000, 2.10 unsmoothed; moving-head jitter 2.0 / 0.66 / 0.73 / 0.74
            mm/frame²); without it the prior's alternating gradient dominated Adam's normalised steps, the frames
            could not shift together and the shared identity took up the misfit (``bench_video.py``, seeds 7-9:
            smoothing in stage 2 cost up to 0.051 AUC against no smoothing, with μ = 10 at most 0.004).
        stage2_identity_learning_rate: Adam's step size for an identity shared by several frames in stage 2 (σ units;
            subjects of one frame keep ``texture.learning_rates["identity"]``, 0.02). Default 0.1: the frames' summed
            gradient points the same way for longer than one image's, and with the image default stage 2 moved the
            shared identity too little. Chosen on seed 9's second sequence (noisy landmarks, mean error 2.10 / 2.00 /
            1.85 / 1.81 mm at 0.02 / 0.05 / 0.1 / 0.2; per frame 0.1 made it worse, 2.38 → 2.57; 7 of its frames as a
            photo set: 1.97 → 1.78); checked on seeds 7 and 8 (``benchmarks/bench_video.py``, shared stage 1 + 2,
            noisy landmarks: AUC 0.937 → 0.939 and 0.818 → 0.828).
        stage2_rounds: stage 2's rounds over the parameter groups when an identity is shared by several frames;
            None (default): ``texture.rounds``. More rounds were better on the tuning sequence (0.1 with 3 / 6 / 12
            rounds: 1.85 / 1.47 / 1.12 mm) but 6 were worse on seed 7 (shared stage 1 + 2, AUC noisy 0.923 against
            0.939 with 3, exact 0.889 against 0.915), so the default stays.
        stage2_keep_size: with stage 2 by Levenberg-Marquardt (``texture.optimizer=gauss_newton``) and an identity
            shared by several frames, stage 2 leaves the head's size where stage 1 put it: the identity's step has no
            component along the mean shape's own scaling (:func:`~.gauss_newton_ties.size_direction`). A head k
            times larger at k times the distance makes the same photos, so the size comes from the prior; counted
            once over many frames it no longer holds a converged fit, and the pooled heads shrank (seed 7 of
            ``bench_video.py``, noisy landmarks: Procrustes scale onto the true neutral shape 0.94-1.06 after stage 1,
            0.99-1.10 after stage 2; rigid AUC below the per-frame fit's while the similarity-aligned error halved).
        groups: the groups stage 1 optimises (leave out ``identity`` to keep a given identity fixed).
        warm_start: start from independent per-frame fits (the identity: their mean over the subject).
        cg_iterations: most conjugate-gradient iterations per Levenberg–Marquardt solve.
        cg_tolerance: CG stops when every subject's residual norm fell by this factor.
    """

    share_identity: bool = True
    r_id: float | None = 0.01
    smooth: bool = False
    smooth_order: int = 2
    smooth_rotation: float = 100.0
    smooth_translation: float = 1e-2
    smooth_expression: float = 0.1
    stage2_step_filter: float = 10.0
    stage2_identity_learning_rate: float | None = 0.1
    stage2_rounds: int | None = None
    stage2_keep_size: bool = True
    groups: tuple[str, ...] = SEQUENCE_GROUPS
    warm_start: bool = True
    cg_iterations: int = 200
    cg_tolerance: float = 1e-6

    def __post_init__(self):
        self.groups = tuple(self.groups)
        unknown = set(self.groups) - set(SEQUENCE_GROUPS)
        if unknown:
            raise ValueError(f"unknown parameter groups {sorted(unknown)}; choose from {SEQUENCE_GROUPS}")
        if self.smooth_order not in (1, 2):
            raise ValueError(f"smooth_order must be 1 or 2, got {self.smooth_order}")
        if self.stage2_identity_learning_rate is not None and not self.stage2_identity_learning_rate > 0:
            raise ValueError(f"stage2_identity_learning_rate must be positive or None, got "
                             f"{self.stage2_identity_learning_rate}")
        if self.stage2_rounds is not None and self.stage2_rounds < 1:
            raise ValueError(f"stage2_rounds must be at least 1 or None, got {self.stage2_rounds}")
        if self.r_id is not None and self.r_id < 0:
            raise ValueError(f"r_id must not be negative, got {self.r_id}")
        for name in ("smooth_rotation", "smooth_translation", "smooth_expression", "stage2_step_filter",
                     "cg_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.cg_iterations < 1:
            raise ValueError(f"cg_iterations must be at least 1, got {self.cg_iterations}")


@dataclass
class SequenceLandmarkFitResult:
    """Per-frame parameters, per-subject identities and energies.

    Shape:
        params: FaceParameters (B, ...) (``alpha_id`` is the frame's subject identity); identity: (G, K_id)
        with identity_index (B,) (G = S when shared, B otherwise); energy, smoothness, id_prior: (S,);
        landmark_energy, exp_prior: (B,); landmark_indices: (B, 68); history: list of (S,).
    """

    params: FaceParameters
    identity: torch.Tensor
    identity_index: torch.Tensor
    groups: FrameGroups
    energy: torch.Tensor
    landmark_energy: torch.Tensor
    exp_prior: torch.Tensor
    id_prior: torch.Tensor
    smoothness: torch.Tensor
    landmark_indices: torch.Tensor
    history: list = field(default_factory=list)

    def frame_energy(self) -> torch.Tensor:
        """Each frame's share of its subject's energy (the subject terms split evenly). Shape: -> (B,)."""
        subject = self.groups.subject
        per_frame = (self.id_prior + self.smoothness) / self.groups.frames_per_subject(self.energy.dtype)
        return self.landmark_energy + self.exp_prior + per_frame[subject]


def smoothness_weights(config: SequenceFitConfig, model: MorphableModel, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """λ per coordinate of each group's variable (pose: 3 angles then 3 translations; expression in α units).

    Shape: -> {"pose": (6,), "expression": (K_exp,)}.
    """
    rotation = torch.full((3,), config.smooth_rotation, dtype=dtype)
    translation = torch.full((3,), config.smooth_translation, dtype=dtype)
    exp_std = model.exp_std.to(dtype).cpu().clamp_min(1e-12)
    return {"pose": torch.cat([rotation, translation]), "expression": config.smooth_expression / exp_std.pow(2)}


def smoothness_energy(x: torch.Tensor, operator: DifferenceOperator, weight: torch.Tensor,
                      groups: FrameGroups) -> torch.Tensor:
    """``Σ_rows Σ_k λ_k (D·x)²_rk`` per subject (a row belongs to its first frame's subject).

    Shape: x (B, K); weight (K,) -> (S,).
    """
    out = x.new_zeros(groups.num_subjects)
    if operator.num_rows == 0:
        return out
    rows = (operator.apply(x).pow(2) * weight).sum(-1)
    return out.index_add_(0, groups.subject[operator.rows[:, 0]], rows)


def solve_coupled(blocks: torch.Tensor, rhs: torch.Tensor, operator: DifferenceOperator, weight: torch.Tensor,
                  groups: FrameGroups, free: torch.Tensor, iterations: int = 200,
                  tolerance: float = 1e-6) -> torch.Tensor:
    """Solve ``(blockdiag(H_t) + λ·DᵀD) x = b`` for the free frames (frozen frames: ``x_t = 0``), per subject.

    Preconditioned conjugate gradients; the preconditioner is each frame's ``H_t + λ·diag(DᵀD)_t``, so with
    no difference rows the first iteration is the exact solution. Each subject stops when its own residual norm
    fell by ``tolerance``.

    Shape:
        blocks: (B, K, K) symmetric positive definite; rhs: (B, K); weight: (K,); free: (B,) bool -> (B, K).
    """
    mask = free.to(rhs.dtype)[:, None]
    coupled = operator.num_rows > 0
    gram = operator.gram_diagonal(rhs.dtype) if coupled else torch.zeros_like(rhs[:, 0])
    weight = weight.to(rhs)
    precond = blocks + torch.diag_embed(gram[:, None] * weight)
    factor, _ = torch.linalg.cholesky_ex(precond)

    def apply(x):
        out = (blocks @ x[0][..., None])[..., 0]
        if coupled:
            out = out + weight * operator.apply_transpose(operator.apply(x[0]))
        return (out * mask,)

    def precondition(r):
        return (torch.cholesky_solve(r[0][..., None], factor)[..., 0] * mask,)

    return subject_conjugate_gradients(apply, precondition, (rhs * mask,), (groups.subject,), groups.num_subjects,
                                       iterations if coupled else 1, tolerance)[0]


class _SequenceProblem:
    """Stage 1's problem over subjects: :class:`_Stage1Problem`'s residuals and Jacobians per frame, summed
    per subject, with the shared identity and the smoothness coupling."""

    def __init__(self, model: MorphableModel, landmarks_2d: torch.Tensor, image_size: tuple[int, int],
                 groups: FrameGroups, config: LandmarkFitConfig, sequence: SequenceFitConfig, focal: torch.Tensor,
                 principal_point: torch.Tensor, frozen: torch.Tensor):
        present = torch.isfinite(landmarks_2d).all(-1) & model.landmark_mask[None]
        if sequence.share_identity and sequence.r_id is not None:  # a shared identity's own prior weight
            config = replace(config, r_id=sequence.r_id)
        self.frames = _Stage1Problem(model, landmarks_2d, present, image_size, config, focal, principal_point)
        self.groups, self.sequence = groups, sequence
        dtype, device = landmarks_2d.dtype, landmarks_2d.device
        B = landmarks_2d.shape[0]
        self.identity_index = groups.subject if sequence.share_identity else torch.arange(B, device=device)
        # the subject of every identity: G = S when shared, G = B otherwise
        self.identity_owner = (torch.arange(groups.num_subjects, device=device) if sequence.share_identity
                               else groups.subject)
        self.operator = (groups.difference(sequence.smooth_order) if sequence.smooth
                         else DifferenceOperator.empty(B, device=device))
        self.weights = {k: v.to(device) for k, v in smoothness_weights(sequence, model, dtype).items()}
        self.free = ~frozen

    def identity_frames(self, identity: torch.Tensor) -> torch.Tensor:
        return identity.index_select(0, self.identity_index)

    def energies(self, pose, identity, a_exp, landmark_energy: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every term, per frame and per subject (``landmark_energy`` given: not recomputed)."""
        frames, groups = self.frames, self.groups
        if landmark_energy is None:
            lin = frames.linearise(pose, self.identity_frames(identity), a_exp, None)
            landmark_energy = frames.residuals(lin.cam).pow(2).sum((1, 2))
        exp_prior = frames.prior(a_exp, "expression")
        id_prior = torch.zeros(groups.num_subjects, dtype=pose.dtype, device=pose.device).index_add_(
            0, self.identity_owner, frames.prior(identity, "identity"))
        smooth = (smoothness_energy(pose, self.operator, self.weights["pose"], groups)
                  + smoothness_energy(a_exp, self.operator, self.weights["expression"], groups))
        total = groups.sum_per_subject(landmark_energy + exp_prior) + id_prior + smooth
        return {"total": total, "landmarks": landmark_energy, "exp_prior": exp_prior, "id_prior": id_prior,
                "smoothness": smooth}

    def _trial_landmarks(self, group: str, lin: _Linearisation, step: torch.Tensor, trial: torch.Tensor):
        """Per-frame landmark energy with the frames' group variable at ``trial`` = current + ``step``,
        from the linearisation's points (the contour stays marched as linearised)."""
        frames = self.frames
        if group == "pose":
            _, rotation = _camera_rotation(trial[:, :3], frames.flip)
            cam = lin.points @ rotation.transpose(1, 2) + trial[:, None, 3:]
        else:
            delta = (lin.basis.reshape(step.shape[0], NUM_POINT_COORDS, -1) @ step[..., None]).view_as(lin.cam)
            cam = lin.cam + delta @ lin.cam_rotation.transpose(1, 2)
        return frames.residuals(cam).pow(2).sum((1, 2))

    def step(self, group: str, variables: dict[str, torch.Tensor]) -> torch.Tensor:
        """One damped Gauss-Newton step of ``group`` for every subject; returns the subjects' energies (S,)."""
        frames, groups = self.frames, self.groups
        pose, identity, a_exp = variables["pose"], variables["identity"], variables["expression"]
        lin = frames.linearise(pose, self.identity_frames(identity), a_exp, group)
        residual = frames.residuals(lin.cam).reshape(frames.batch, -1)
        jtj = lin.jacobian.transpose(1, 2) @ lin.jacobian
        jtr = (lin.jacobian.transpose(1, 2) @ residual[..., None])[..., 0]
        current = self.energies(pose, identity, a_exp, residual.pow(2).sum(-1))["total"]
        if group == "identity":
            owner = self.identity_owner
            if self.sequence.share_identity:
                jtj, jtr = groups.sum_per_subject(jtj), groups.sum_per_subject(jtr)
            pw2 = frames.prior_weight["identity"].pow(2)
            jtj = jtj + torch.diag_embed(pw2.expand(jtj.shape[0], -1))
            jtr = jtr + pw2 * identity
        else:
            owner = groups.subject
            weight = self.weights[group]
            variable = pose if group == "pose" else a_exp
            if group == "expression":
                pw2 = frames.prior_weight["expression"].pow(2)
                jtj = jtj + torch.diag_embed(pw2.expand(jtj.shape[0], -1))
                jtr = jtr + pw2 * a_exp
            if self.operator.num_rows:
                jtr = jtr + weight * self.operator.apply_transpose(self.operator.apply(variable))
            jtr = jtr * self.free.to(jtr.dtype)[:, None]
        damping, base = variables["damping"], variables[group]
        diag = torch.diagonal(jtj, dim1=1, dim2=2)
        undecided = torch.ones(groups.num_subjects, dtype=torch.bool, device=pose.device)
        for _ in range(MAX_DAMPING_TRIES):
            system = jtj + torch.diag_embed(damping[owner, None] * diag + 1e-9)
            if group == "identity":
                step = solve_spd(system, -jtr[..., None])[0][..., 0]
                frame_step, frame_trial = self.identity_frames(step), self.identity_frames(base + step)
            else:
                step = solve_coupled(system, -jtr, self.operator, self.weights[group], groups, self.free,
                                     self.sequence.cg_iterations, self.sequence.cg_tolerance)
                frame_step, frame_trial = step, base + step
            values = {"pose": pose, "identity": identity, "expression": a_exp, group: base + step}
            landmarks = self._trial_landmarks(group, lin, frame_step, frame_trial)
            trial_energy = self.energies(values["pose"], values["identity"], values["expression"], landmarks)["total"]
            # per subject: the frames (or identities) of a subject whose energy went down take the step
            better = undecided & torch.isfinite(trial_energy) & (trial_energy < current)
            variables[group] = torch.where(better[owner, None], base + step, variables[group])
            current = torch.where(better, trial_energy, current)
            damping = torch.where(better, damping * 0.3, torch.where(undecided, damping * 10, damping)).clamp(1e-7, 1e7)
            undecided = undecided & ~better
            if not undecided.any():
                break
        variables["damping"] = damping
        return current


def fit_landmarks_sequence(model: MorphableModel, landmarks_2d: torch.Tensor, image_size: tuple[int, int],
                           groups: FrameGroups, config: LandmarkFitConfig = LandmarkFitConfig(),
                           sequence: SequenceFitConfig = SequenceFitConfig(), init: FaceParameters | None = None,
                           frozen: torch.Tensor | None = None, progress=None) -> SequenceLandmarkFitResult:
    """Stage 1 for frames grouped by subject: shared identity, temporal smoothness (see the module docstring).

    Args:
        model: the morphable model.
        landmarks_2d: observed landmarks per frame, pixels (NaN rows: missing).
        image_size: (height, width) of the frames the landmarks are in.
        groups: the subject of every frame and which subjects are ordered sequences.
        config: stage-1 weights and iteration counts (``rounds``, ``pose_steps``, ``steps_per_group``).
        sequence: sharing and smoothness.
        init: starting parameters per frame (their identities are averaged per subject when shared);
            default: independent per-frame fits (``sequence.warm_start``) or the frontal mean face.
        frozen: frames whose pose and expression are kept (default: none).
        progress: optional ``progress(round_index, energy)``.

    Shape:
        landmarks_2d: (B, 68, 2); frozen: (B,) bool.
    """
    check_shape(landmarks_2d, ["B", 68, 2], "landmarks_2d")
    B = landmarks_2d.shape[0]
    if groups.num_frames != B:
        raise ValueError(f"groups describe {groups.num_frames} frames, landmarks_2d has {B}")
    threads = config.cpu_threads
    if threads < 0:
        threads = 1 if B <= 64 else 0
    with torch_threads(threads if landmarks_2d.device.type == "cpu" else None):
        return _fit_sequence(model, landmarks_2d, image_size, groups.to(landmarks_2d.device), config, sequence,
                             init, frozen, progress)


def _fit_sequence(model, landmarks_2d, image_size, groups, config, sequence, init, frozen, progress):
    B, dtype, device = landmarks_2d.shape[0], landmarks_2d.dtype, landmarks_2d.device
    if init is None:
        if sequence.warm_start:
            init = fit_landmarks(model, landmarks_2d, image_size, config).params
        else:
            init = initial_parameters(model, landmarks_2d, image_size, config.focal_px)
    init = init.map(lambda t: t.detach().to(dtype))
    frozen = torch.zeros(B, dtype=torch.bool, device=device) if frozen is None else frozen.to(device)
    problem = _SequenceProblem(model, landmarks_2d, image_size, groups, config, sequence, init.focal,
                               init.principal_point, frozen)
    if sequence.share_identity:
        # the frames' mean identity (frozen frames carry the subject's identity already, so they count too)
        identity = groups.sum_per_subject(init.alpha_id) / groups.frames_per_subject(dtype)[:, None]
    else:
        identity = init.alpha_id.clone()
    variables = {"pose": torch.cat([init.angles, init.translation], -1).clone(), "identity": identity,
                 "expression": init.alpha_exp.clone(),
                 "damping": torch.full((groups.num_subjects,), config.initial_damping, dtype=dtype, device=device)}
    history = []
    steps = {"pose": config.pose_steps, "identity": config.steps_per_group, "expression": config.steps_per_group}
    current = problem.energies(variables["pose"], variables["identity"], variables["expression"])["total"]
    for round_index in range(config.rounds):
        for group in SEQUENCE_GROUPS:
            if group not in sequence.groups or (group == "identity" and model.id_dims == 0) or (
                    group == "expression" and model.exp_dims == 0):
                continue
            for _ in range(steps[group]):
                current = problem.step(group, variables)
        history.append(current.detach().clone())
        if progress is not None:
            progress(round_index, current)

    pose, identity, a_exp = variables["pose"], variables["identity"], variables["expression"]
    terms = problem.energies(pose, identity, a_exp)
    final = problem.frames.linearise(pose, problem.identity_frames(identity), a_exp, None)
    params = replace(init, alpha_id=problem.identity_frames(identity), alpha_exp=a_exp, angles=pose[:, :3],
                     translation=pose[:, 3:])
    return SequenceLandmarkFitResult(
        params=params, identity=identity, identity_index=problem.identity_index, groups=groups,
        energy=terms["total"], landmark_energy=terms["landmarks"], exp_prior=terms["exp_prior"],
        id_prior=terms["id_prior"], smoothness=terms["smoothness"],
        landmark_indices=problem.frames.rows.vertices[final.local], history=history)


class OnlineLandmarkFitter:
    """Stage 1 frame by frame, for live video: :meth:`push` one frame's landmarks, get its parameters at once.

    Each new frame is fitted alone with the current identity, tied by the smoothness prior to the ``smooth_order``
    frames before it (kept as they were fitted). The identity is re-estimated from all frames so far, fitted
    together (shared identity, smoothness, warm-started), when the 1st, 2nd, 4th, 8th, ... frame arrives and at
    frame ``identity_frames``; from then on it is fixed. (Refitting at every frame of the start would cost
    ``identity_frames²`` frame fits; this schedule costs about ``2·identity_frames``.)

    Example:
        >>> fitter = OnlineLandmarkFitter(model, (224, 224))
        >>> for landmarks in stream:                  # (68, 2) pixels per frame
        ...     params = fitter.push(landmarks)       # FaceParameters (1, ...)
    """

    def __init__(self, model: MorphableModel, image_size: tuple[int, int],
                 config: LandmarkFitConfig = LandmarkFitConfig(),
                 sequence: SequenceFitConfig = SequenceFitConfig(smooth=True), identity_frames: int = 30,
                 dtype: torch.dtype = torch.float64):
        if identity_frames < 1:
            raise ValueError(f"identity_frames must be at least 1, got {identity_frames}")
        self.model, self.image_size, self.config, self.dtype = model, image_size, config, dtype
        self.sequence = replace(sequence, share_identity=True)
        self.identity_frames = identity_frames
        self.landmarks: list[torch.Tensor] = []
        self.params: FaceParameters | None = None  # every frame so far, (t, ...)
        self.identity: torch.Tensor | None = None  # fixed after identity_frames frames, (1, K_id)
        self.current_identity: torch.Tensor | None = None  # the latest estimate before that

    def push(self, landmarks_2d: torch.Tensor) -> FaceParameters:
        """Fit the next frame. Shape: landmarks_2d (68, 2) or (1, 68, 2) pixels -> FaceParameters (1, ...)."""
        frame = landmarks_2d.reshape(1, 68, 2).to(self.model.mean_shape.device, self.dtype)
        self.landmarks.append(frame)
        n = len(self.landmarks)
        if self.identity is not None:
            self._fit_next(frame, self.identity)
        elif n == self.identity_frames or n & (n - 1) == 0:  # the last frame before fixing it, or a power of two
            self._fit_start()
        else:
            self._fit_next(frame, self.current_identity)
        return self.params.index(slice(-1, None))

    def _fit_start(self) -> None:
        landmarks = torch.cat(self.landmarks)
        n = landmarks.shape[0]
        groups = FrameGroups(torch.zeros(n, dtype=torch.long, device=landmarks.device),
                             torch.ones(1, dtype=torch.bool, device=landmarks.device))
        alone = fit_landmarks(self.model, landmarks[-1:], self.image_size, self.config).params
        init = alone if self.params is None else _concat([self.params, alone])
        result = fit_landmarks_sequence(self.model, landmarks, self.image_size, groups, self.config,
                                        replace(self.sequence, warm_start=False), init=init)
        self.params, self.current_identity = result.params, result.identity
        if n >= self.identity_frames:
            self.identity = result.identity

    def _fit_next(self, frame: torch.Tensor, identity: torch.Tensor) -> None:
        keep = min(self.sequence.smooth_order if self.sequence.smooth else 0, self.params.batch_size)
        previous = replace(self.params.index(slice(self.params.batch_size - keep, None)),
                           alpha_id=identity.expand(keep, -1))
        start = replace(self.params.index(slice(-1, None)), alpha_id=identity)
        init = _concat([previous, start])
        landmarks = torch.cat(self.landmarks[-keep - 1:]) if keep else frame
        n = keep + 1
        groups = FrameGroups(torch.zeros(n, dtype=torch.long, device=frame.device),
                             torch.ones(1, dtype=torch.bool, device=frame.device))
        frozen = torch.arange(n, device=frame.device) < keep
        sequence = replace(self.sequence, groups=("pose", "expression"), warm_start=False)
        result = fit_landmarks_sequence(self.model, landmarks, self.image_size, groups, self.config, sequence,
                                        init=init, frozen=frozen)
        self.params = _concat([self.params, result.params.index(slice(-1, None))])


def _concat(parts: list[FaceParameters]) -> FaceParameters:
    return FaceParameters(**{name: (None if value is None else torch.cat([getattr(p, name) for p in parts]))
                             for name, value in parts[0].items()})
