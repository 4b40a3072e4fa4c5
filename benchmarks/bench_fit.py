"""Benchmark stage-1 landmark fitting (``fit_landmarks``) against the previous implementation, in one run.

Landmark-only fitting (the default ``LandmarkFitConfig``: 3 rounds of 2 pose + 1 identity + 1 expression
LM steps, contour marching on)
of synthetic faces with 2 px landmark noise, on the built-in model (6,561 vertices, 80/29/80
modes) and on a BFM-sized random model (35,709 vertices, 80/29/80 modes: a grid with smooth random
bases, 68 landmark vertices and 16 contour lines of 40 vertices), at batch 1, 32 and 256. The
previous implementation is kept below as the reference (verbatim but for the per-group step counts,
so both do the same steps), and is timed in the same run
(interleaved with the current one; best of the repeats, since the machine may be shared)::

    .venv/bin/python benchmarks/bench_fit.py            # table
    .venv/bin/python benchmarks/bench_fit.py --json     # one JSON object
    .venv/bin/python benchmarks/bench_fit.py --quick    # under a minute: batch 1 and 32, one repeat
    .venv/bin/python benchmarks/bench_fit.py --device cuda --models bfm-size --batches 256 --texture-batch 256
    .venv/bin/python benchmarks/bench_fit.py --stages 2 ...   # stage 2 alone (--stages 1: stage 1 alone)

Stage 1's default runs batches of up to 64 faces on one CPU thread (``LandmarkFitConfig.cpu_threads``);
the ``all thr.`` column times the same fit on torch's thread setting. Stage 2 (texture, default
``TextureFitConfig``) is timed once per model at batch 32 (``--quick``: 8) on random 224 px images:
``texture_images_per_s_bfm_size`` and ``texture_images_per_s_builtin``;
``texture_images_per_s_bfm_size_full_mesh`` is the same BFM-sized fit computed on the whole mesh
(``active_vertices=False``, the energy is the same), the reference. ``--gauss-newton`` adds stage 2 by
Levenberg-Marquardt (``GAUSS_NEWTON``: the image term at 112², 4 rounds) per model, its reference the same fit with
the Jacobian by forward mode through the whole renderer (``jacobian="direct"``, one pass per coordinate, batched;
the default ``"chain"`` goes through the masked pixels' triangle corners): ``gauss_newton_images_per_s_*`` and
``gauss_newton_speedup_*``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from accuracy_fit import GAUSS_NEWTON_R_ID
from bench_output import add_output_arguments, emit

from diffface.camera import euler_to_rotation, euler_to_rotation_jacobian, model_to_camera_flip, perspective_project
from diffface.fitting import (LandmarkFitConfig, LandmarkFitResult, TextureFitConfig, fit_landmarks, fit_texture,
                              initial_parameters)
from diffface.checks import check_finite, check_shape
from diffface.landmark_marching import march_contour_landmarks
from diffface.model_format import MorphableModelData
from diffface.morphable_model import MorphableModel, load_morphable_model
from diffface.params import FaceParameters
from diffface.app.synth import SceneConfig, noisy_landmarks, sample_scenes
from diffface.landmark_marching import project_landmarks

GROUPS = ("pose", "identity", "expression")
BFM_VERTICES = 35709
# stage 2 by Levenberg-Marquardt as accuracy_fit.py's row "gauss-newton image l21" runs it
GAUSS_NEWTON = TextureFitConfig(term="image", image_term_size=112, optimizer="gauss_newton", r_id=GAUSS_NEWTON_R_ID,
                                rounds=4)


def bfm_sized_model(seed: int = 0) -> MorphableModel:
    """A random model with BFM's size: 35,709 vertices on a 189 x 189 grid (the last 12 dropped), 80/29/80 modes.

    Landmarks are 68 grid vertices on an ellipse (0-16 along the jaw), contour lines run outwards
    from each jaw landmark along its grid row (40 vertices). Timing only: the bases are random smooth fields.
    """
    rng = np.random.default_rng(seed)
    side = 189
    xs, ys = np.meshgrid(np.linspace(-80, 80, side), np.linspace(-100, 100, side))
    mean = np.stack([xs.ravel(), ys.ravel(), 60 * np.exp(-(xs.ravel() ** 2 + ys.ravel() ** 2) / 4000)], 1)[:BFM_VERTICES]
    quads = [(i * side + j, i * side + j + 1, (i + 1) * side + j, (i + 1) * side + j + 1)
             for i in range(side - 1) for j in range(side - 1)]
    tris = np.array([t for a, b, c, d in quads for t in ((a, b, d), (a, d, c))])
    tris = tris[(tris < BFM_VERTICES).all(1)]
    angle = np.linspace(0.9 * np.pi, 0.1 * np.pi, 68) + np.pi  # lower half for the jaw first
    rows = np.clip(np.round((np.sin(angle) * 0.6 + 1) / 2 * (side - 1)).astype(int), 0, side - 2)
    cols = np.clip(np.round((np.cos(angle) * 0.6 + 1) / 2 * (side - 1)).astype(int), 0, side - 1)
    landmarks = rows * side + cols
    contour = np.array([k for k in range(17) if k != 8])
    lines = np.array([[rows[k] * side + int(np.clip(cols[k] + (1 if cols[k] >= side // 2 else -1) * step, 0, side - 1))
                       for step in range(40)] for k in contour])
    V = BFM_VERTICES

    # smooth random bases (low-frequency cosine fields over the grid, 2 mm RMS per mode): a face-like surface, so
    # that a rasterizing stage 2 sees triangles of a real mesh's size (per-vertex noise made a spiky mesh whose
    # triangles spanned tens of pixels)
    grid = np.stack([(xs.ravel() + 80) / 160, (ys.ravel() + 100) / 200], 1)[:V]
    frequencies = np.array([(a, b) for a in range(5) for b in range(5) if a + b > 0])
    fields = np.cos(np.pi * grid[:, None, 0] * frequencies[:, 0]) * np.cos(np.pi * grid[:, None, 1] * frequencies[:, 1])

    def basis(k):
        values = np.einsum("vf,fck->vck", fields, rng.normal(size=(len(frequencies), 3, k)))
        return values * 2.0 / np.sqrt((values ** 2).mean(axis=(0, 1), keepdims=True))

    return MorphableModel(MorphableModelData(
        mean_shape=mean, id_basis=basis(80), id_std=np.linspace(3, 0.3, 80), exp_basis=basis(29),
        exp_std=np.linspace(2, 0.2, 29), albedo_mean=np.full((V, 3), 0.6), albedo_basis=np.zeros((V, 3, 1)),
        albedo_std=np.ones(1), triangles=tris, uv=(mean[:, :2] - mean[:, :2].min(0)) / np.ptp(mean[:, :2], 0),
        landmark_indices=landmarks, contour_landmarks=contour, contour_lines=lines, has_albedo=False,
        name="bfm-sized-random", source="benchmark"))


# ---- the previous implementation (reference) -------------------------------------------------

@dataclass
class _ReferenceTerms:
    residual: torch.Tensor
    jac_pose: torch.Tensor
    jac_id: torch.Tensor
    jac_exp: torch.Tensor


def _reference_landmark_terms(pose, a_id, a_exp, mean_lm, id_lm, exp_lm, target, weight, focal, pp, need_jacobian=True):
    flip = model_to_camera_flip(pose)
    points = mean_lm + torch.einsum("blck,bk->blc", id_lm, a_id) + torch.einsum("blck,bk->blc", exp_lm, a_exp)
    rotation = euler_to_rotation(pose[:, :3]) * flip[:, None]  # F·R, (B, 3, 3)
    cam = points @ rotation.transpose(1, 2) + pose[:, None, 3:]
    z = cam[..., 2].clamp_min(1e-6)
    f = focal[:, None, 0]
    uv = f[..., None] * cam[..., :2] / z[..., None] + pp[:, None]
    residual = ((uv - target) * weight[..., None]).reshape(pose.shape[0], -1)
    if not need_jacobian:
        return _ReferenceTerms(residual, None, None, None)
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
    return _ReferenceTerms(residual, jac_pose, jac_id, jac_exp)



def reference_fit_landmarks(model: MorphableModel, landmarks_2d: torch.Tensor, image_size: tuple[int, int],
                  config: LandmarkFitConfig = LandmarkFitConfig(), init: FaceParameters | None = None,
                  progress=None) -> LandmarkFitResult:
    """The previous implementation (full-size per-sample gathers, every group's Jacobian, up to four LU solves per step)."""
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
        terms = _reference_landmark_terms(pose_, a_id_, a_exp_, *data, need_jacobian=False)
        land = terms.residual.pow(2).sum(-1)
        return land + (a_id_ * prior_weight["identity"]).pow(2).sum(-1) + \
            (a_exp_ * prior_weight["expression"]).pow(2).sum(-1), land

    for round_index in range(config.rounds):
        for group in GROUPS:
            if (group == "expression" and K_exp == 0) or (group == "identity" and K_id == 0):
                continue
            g = GROUPS.index(group)
            for _ in range(config.pose_steps if group == "pose" else config.steps_per_group):
                data = gathered(lm_indices(pose, a_id, a_exp))
                variables = [pose, a_id, a_exp]
                terms = _reference_landmark_terms(pose, a_id, a_exp, *data)
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


# ---- benchmark ---------------------------------------------------------------------------------

def observations(model: MorphableModel, batch: int, seed: int = 0) -> torch.Tensor:
    """Noisy (2 px) landmarks of ``batch`` random synthetic faces. Shape: -> (B, 68, 2)."""
    truth = sample_scenes(model, batch, SceneConfig(seed=seed))
    clean, _ = project_landmarks(model, truth)
    return noisy_landmarks(clean, 2.0, seed=seed)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(fits: dict, observed: torch.Tensor, model: MorphableModel, repeats: int) -> dict:
    """Best-of-``repeats`` images/s of each fit function, the functions interleaved, and their mean energies."""
    best = {name: float("inf") for name in fits}
    energy = {}
    for _ in range(repeats):
        for name, fit in fits.items():
            synchronize(observed.device)
            start = time.perf_counter()
            result = fit(model, observed, (224, 224), LandmarkFitConfig())
            synchronize(observed.device)
            best[name] = min(best[name], time.perf_counter() - start)
            energy[name] = float(result.energy.nanmean())
    return {name: observed.shape[0] / seconds for name, seconds in best.items()}, energy


def all_threads(model, observed, image_size, config):
    """``fit_landmarks`` on torch's thread setting whatever the batch."""
    return fit_landmarks(model, observed, image_size, replace(config, cpu_threads=0))


MODELS = {"builtin": lambda: load_morphable_model("builtin"), "bfm-size": bfm_sized_model}


def run(quick: bool, device: str = "cpu", model_names: tuple[str, ...] = tuple(MODELS),
        batches: tuple[int, ...] | None = None, texture_batch: int | None = None,
        stages: tuple[int, ...] = (1, 2), gauss_newton: bool = False) -> dict:
    """Stage 1 at ``batches`` (default 1, 32, 256; ``quick``: 1, 32) and stage 2 at ``texture_batch`` (default 32;
    ``quick``: 8) for each model of ``model_names``, on ``device``; only the ``stages`` asked for; ``gauss_newton``:
    also stage 2 by Levenberg-Marquardt and its reference (module docstring)."""
    device = torch.device(device)
    models = {name: MODELS[name]().to(device) for name in model_names}
    batches = batches or ((1, 32) if quick else (1, 32, 256))
    repeats = 1 if quick else 3
    rows = []
    for model_name, model in models.items():
        if 1 not in stages:
            break
        observed_all = observations(model, max(batches)).to(device)
        fit_landmarks(model, observed_all[:2], (224, 224))  # first-call costs out of the timings
        for batch in batches:
            fits = {"current": fit_landmarks}
            if device.type == "cpu":  # the default runs small batches on one thread (cpu_threads); also torch's
                fits["current_all_threads"] = all_threads
            # the reference takes minutes at batch 256 on a CPU; --quick times it at batch 32 only
            if batch <= 32 and not (quick and batch == 1):
                fits["reference"] = reference_fit_landmarks
            speed, energy = images_per_s(fits, observed_all[:batch], model, repeats)
            ref, all_threads_speed = speed.get("reference"), speed.get("current_all_threads")
            rows.append({"model": model_name, "vertices": model.num_vertices, "batch": batch,
                         "landmark_images_per_s": round(speed["current"], 1),
                         "all_threads_images_per_s": None if all_threads_speed is None else round(all_threads_speed, 1),
                         "reference_images_per_s": None if ref is None else round(ref, 1),
                         "speedup": None if ref is None else round(speed["current"] / ref, 1),
                         "energy_mean": round(energy["current"], 6),
                         "reference_energy_mean": None if ref is None else round(energy["reference"], 6)})
    texture_batch = texture_batch or (8 if quick else 32)
    texture_rows = [texture_speed(name, model, texture_batch) for name, model in models.items() if 2 in stages]
    if "bfm-size" in models and 2 in stages:
        # the same fit on the whole mesh (TextureFitConfig.active_vertices=False): the reference for the BFM size
        texture_rows.append(texture_speed("bfm-size", models["bfm-size"], texture_batch, active_vertices=False))
    gauss_newton_rows = []
    if gauss_newton and 2 in stages:
        for name, model in models.items():
            current = texture_speed(name, model, texture_batch, config=GAUSS_NEWTON)
            reference = texture_speed(name, model, texture_batch, config=replace(GAUSS_NEWTON, jacobian="direct"))
            gauss_newton_rows.append({**current, "reference_images_per_s": reference["texture_images_per_s"],
                                      "speedup": round(current["texture_images_per_s"]
                                                       / reference["texture_images_per_s"], 2)})
    # the first model's batch-32 row (builtin's by default)
    head = next((r for r in rows if r["batch"] == 32), rows[0] if rows else dict.fromkeys(
        ("landmark_images_per_s", "model", "batch", "reference_images_per_s")))

    def texture(model_name: str, active_vertices: bool = True) -> float | None:
        return next((r["texture_images_per_s"] for r in texture_rows
                     if r["model"] == model_name and r["active_vertices"] == active_vertices), None)

    return {"landmark_images_per_s": head["landmark_images_per_s"], "landmark_model": head["model"],
            "landmark_batch": head["batch"], "reference_landmark_images_per_s": head["reference_images_per_s"],
            "texture_images_per_s_bfm_size": texture("bfm-size"),
            "texture_images_per_s_bfm_size_full_mesh": texture("bfm-size", active_vertices=False),
            "texture_images_per_s_builtin": texture("builtin"),
            "device": str(device), "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(),
            **{f"gauss_newton_{key}_{r['model'].replace('-', '_')}": r[field] for r in gauss_newton_rows
               for key, field in (("images_per_s", "texture_images_per_s"), ("speedup", "speedup"))},
            "torch": torch.__version__, "quick": quick, "rows": rows, "texture_rows": texture_rows,
            "gauss_newton_rows": gauss_newton_rows}


def texture_speed(model_name: str, model: MorphableModel, batch: int, active_vertices: bool = True,
                  config: TextureFitConfig | None = None) -> dict:
    """Images/s of stage 2 (``config``; default: the default TextureFitConfig with ``active_vertices``) on ``batch``
    224 px images, from stage-1 parameters.

    The images are random (timing only: the work per step does not depend on their content).
    """
    device = model.mean_shape.device
    observed = observations(model, batch, seed=1).to(device)
    start_params = fit_landmarks(model, observed, (224, 224)).params
    images = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    config = config or TextureFitConfig(active_vertices=active_vertices)
    fit_texture(model, images[:1], observed[:1], start_params.index(slice(0, 1)),
                replace(config, rounds=1, steps_per_group=1))  # first-call costs out of the timing
    synchronize(device)
    start = time.perf_counter()
    fit_texture(model, images, observed, start_params, config)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"model": model_name, "vertices": model.num_vertices, "batch": batch,
            "active_vertices": config.active_vertices, "optimizer": config.optimizer,
            "texture_images_per_s": round(batch / seconds, 3), "seconds": round(seconds, 2),
            "adam_steps": config.rounds * config.steps_per_group * 3 if config.optimizer == "adam" else 0,
            "uv_size": config.uv_size}


def print_table(result: dict) -> None:
    print(f"torch {result['torch']}, {result['cuda_device'] or result['device']}, {result['threads']} threads; "
          "landmark-only stage 1, "
          f"default config ({LandmarkFitConfig().rounds} rounds x (pose {LandmarkFitConfig().pose_steps} + identity and "
          f"expression {LandmarkFitConfig().steps_per_group} each) LM steps), best of the repeats")
    header = (f"{'model':>9} {'vertices':>8} {'batch':>5} {'images/s':>9} {'all thr.':>9} {'reference':>10} "
              f"{'speedup':>8} {'energy':>9} {'ref energy':>10}")
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        ref = "-" if r["reference_images_per_s"] is None else f"{r['reference_images_per_s']:.1f}"
        speed = "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"
        ref_energy = "-" if r["reference_energy_mean"] is None else f"{r['reference_energy_mean']:.5f}"
        all_threads = "-" if r["all_threads_images_per_s"] is None else f"{r['all_threads_images_per_s']:.1f}"
        print(f"{r['model']:>9} {r['vertices']:>8} {r['batch']:>5} {r['landmark_images_per_s']:>9.1f} "
              f"{all_threads:>9} {ref:>10} "
              f"{speed:>8} {r['energy_mean']:>9.5f} {ref_energy:>10}")


    for r in result["texture_rows"]:
        mesh = "active vertices" if r["active_vertices"] else "whole mesh"
        print(f"stage 2 (texture, {mesh}), {r['model']} ({r['vertices']} vertices), batch {r['batch']}: "
              f"{r['texture_images_per_s']:.2f} images/s ({r['adam_steps']} Adam steps + closed-form lighting/albedo, "
              f"UV {r['uv_size']}²)")
    for r in result.get("gauss_newton_rows", []):
        print(f"stage 2 (Levenberg-Marquardt, image term 112², {GAUSS_NEWTON.rounds} rounds), {r['model']} "
              f"({r['vertices']} vertices), batch {r['batch']}: {r['texture_images_per_s']:.2f} images/s; "
              f"Jacobian through the whole renderer (reference): {r['reference_images_per_s']:.2f} images/s; "
              f"speedup {r['speedup']:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="batch 1 and 32, one repeat (under a minute)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batches", help="stage-1 batch sizes, comma-separated (default 1,32,256; --quick 1,32)")
    parser.add_argument("--texture-batch", type=int, help="stage-2 batch (default 32; --quick 8)")
    parser.add_argument("--stages", default="1,2", help="which stages to time: 1, 2 or 1,2 (default)")
    parser.add_argument("--gauss-newton", action="store_true",
                        help="also time stage 2 by Levenberg-Marquardt and its reference (minutes on a CPU)")
    args = parser.parse_args(argv)
    names = tuple(args.models.split(","))
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else None
    stages = tuple(int(stage) for stage in args.stages.split(","))
    if not set(stages) <= {1, 2}:
        parser.error(f"--stages takes 1, 2 or 1,2, not {args.stages}")
    result = run(args.quick, args.device, names, batches, args.texture_batch, stages, args.gauss_newton)
    emit(result, args, print_table)


if __name__ == "__main__":
    main()
