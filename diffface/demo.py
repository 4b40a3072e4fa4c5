"""``diffface demo``: the main job on the built-in model, offline, in a minute on a CPU.

What exists so far runs end to end: synthesise faces with ground truth (random identity,
expression, albedo, SH lighting, pose) and render them over random backgrounds with the
differentiable renderer, take their landmarks (contour landmarks marched to the silhouette) with
pixel noise, fit the morphable model to the landmarks (the method's stage 1) and then to the
photos' colours (stage 2, texture), render the fits, and write a report comparing both fits with
the ground truth and the mean-shape baseline.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from .evaluation.metrics import normalized_distance_d
from .landmark_io import write_pts
from .morphable_model import load_morphable_model
from .report_images import overlay_landmarks, save_panel_grid, to_numpy, to_uint8_image
from .synth import SceneConfig, noisy_landmarks, project_landmarks, random_backgrounds, sample_scenes


@dataclass
class DemoConfig:
    """Settings of the demo run (saved beside its outputs as ``config.json``)."""

    model: str = "builtin"
    num_faces: int = 16
    device: str = "cpu"
    scene: SceneConfig = field(default_factory=SceneConfig)
    fit_rounds: int = 6
    texture_rounds: int = 3
    texture_norm: str = "l21"
    preview_faces: int = 8


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(), show_progress: bool = True) -> dict:
    """Run the demo and write ``report.json``, ``report.md``, ``config.json``, ``fits.png`` and the
    synthetic photos with their ``.pts`` landmarks (``images/``) to ``out_dir``.

    Returns:
        The report as a dict.
    """
    from diffface.fitting import LandmarkFitConfig, fit_landmarks
    from diffface.renderers import FaceRenderer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    device = torch.device(config.device)
    model = load_morphable_model(config.model).to(device)

    started = time.perf_counter()
    truth = sample_scenes(model, config.num_faces, config.scene)
    true_vertices = model.shape(truth.alpha_id, truth.alpha_exp)
    clean_2d, _ = project_landmarks(model, truth, true_vertices)
    observed_2d = noisy_landmarks(clean_2d, config.scene.landmark_noise_px, seed=config.scene.seed)
    size = config.scene.image_size
    renderer = FaceRenderer(model, size, backend="builtin")
    backgrounds = random_backgrounds(config.num_faces, size, seed=config.scene.seed).to(device)
    with torch.no_grad():
        photos = renderer(truth, backgrounds).images.clamp(0, 1)  # (B, H, W, 3)
    image_dir = out / "images"
    image_dir.mkdir(exist_ok=True)
    for i in range(config.num_faces):
        Image.fromarray(to_uint8_image(photos[i])).save(image_dir / f"face_{i:04d}.png")
        write_pts(image_dir / f"face_{i:04d}.pts", to_numpy(observed_2d[i]))

    bar = tqdm(total=config.fit_rounds, desc="landmark fitting", unit="round", disable=not show_progress)
    fit_started = time.perf_counter()
    fit = fit_landmarks(model, observed_2d, (config.scene.image_size, config.scene.image_size),
                        LandmarkFitConfig(rounds=config.fit_rounds, focal_px=config.scene.focal_px),
                        progress=lambda i, e: (bar.update(1), bar.set_postfix(energy=f"{float(e.mean()):.2f}")))
    bar.close()
    fit_seconds = time.perf_counter() - fit_started

    texture = None
    if config.texture_rounds > 0:
        from diffface.fitting import TextureFitConfig, fit_texture

        bar = tqdm(total=config.texture_rounds, desc="texture fitting", unit="round", disable=not show_progress)
        texture_started = time.perf_counter()
        texture = fit_texture(model, photos.permute(0, 3, 1, 2).contiguous(), observed_2d, fit.params,
                              TextureFitConfig(rounds=config.texture_rounds, norm=config.texture_norm),
                              progress=lambda i, e: (bar.update(1), bar.set_postfix(energy=f"{float(e.mean()):.3f}")))
        bar.close()
        texture_seconds = time.perf_counter() - texture_started

    fitted_vertices = model.shape(fit.params.alpha_id, fit.params.alpha_exp)
    fitted_2d, _ = project_landmarks(model, fit.params, fitted_vertices)
    mean_vertices = model.mean_shape.expand_as(true_vertices)
    err_fit_mm = (fitted_vertices - true_vertices).norm(dim=-1).mean(-1)
    err_mean_mm = (mean_vertices - true_vertices).norm(dim=-1).mean(-1)
    report = {
        "model": {"name": model.name, "vertices": model.num_vertices, "faces": int(model.triangles.shape[0]),
                  "id_dims": model.id_dims, "exp_dims": model.exp_dims, "tex_dims": model.tex_dims,
                  "fingerprint": model.fingerprint},
        "num_faces": config.num_faces,
        "device": str(device),
        "landmark_noise_px": config.scene.landmark_noise_px,
        "landmark_fit": {
            "rms_px_vs_observed": float((fitted_2d - observed_2d).pow(2).sum(-1).mean().sqrt()),
            "rms_px_vs_clean": float((fitted_2d - clean_2d).pow(2).sum(-1).mean().sqrt()),
            "vertex_error_mm_mean": float(err_fit_mm.mean()),
            "normalized_error_d_median": float(normalized_distance_d(fitted_vertices, true_vertices).median()),
            "images_per_s": config.num_faces / fit_seconds,
            "energy_mean": float(fit.energy.mean()),
        },
        "mean_shape_baseline": {
            "vertex_error_mm_mean": float(err_mean_mm.mean()),
            "normalized_error_d_median": float(normalized_distance_d(mean_vertices, true_vertices).median()),
        },
        "texture_fit": None if texture is None else {
            "norm": config.texture_norm,
            "vertex_error_mm_mean": float((model.shape(texture.params.alpha_id, texture.params.alpha_exp)
                                           - true_vertices).norm(dim=-1).mean()),
            "normalized_error_d_median": float(normalized_distance_d(
                model.shape(texture.params.alpha_id, texture.params.alpha_exp), true_vertices).median()),
            "texture_energy_mean": float(texture.texture.mean()),
            "diverged": int(texture.diverged.sum()),
            "images_per_s": config.num_faces / texture_seconds,
        },
        "seconds_total": None,
        "outputs": ["report.json", "report.md", "config.json", "fits.png", "images/"],
    }

    n_preview = min(config.preview_faces, config.num_faces)
    if texture is not None:  # stage 2 estimated albedo and lighting too: show them
        preview = texture.params.index(slice(0, n_preview))
    else:  # stage 1 estimates shape and pose only: show the fit with the mean albedo under the true light
        preview = fit.params.index(slice(0, n_preview))
        preview.beta = torch.zeros(n_preview, model.tex_dims, device=device)
        preview.sh = truth.sh[:n_preview]
    with torch.no_grad():
        fitted_photos = renderer(preview, photos[:n_preview].permute(0, 3, 1, 2)).images
    panels = []
    for i in range(n_preview):
        panels.append(overlay_landmarks(to_uint8_image(photos[i]), [(to_numpy(observed_2d[i]), (80, 255, 80)),
                                                                     (to_numpy(fitted_2d[i]), (255, 60, 60))]))
        panels.append(Image.fromarray(to_uint8_image(fitted_photos[i])))
    save_panel_grid(panels, out / "fits.png", columns=4)
    report["seconds_total"] = time.perf_counter() - started
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def _markdown(report: dict) -> str:
    fit, base, tex = report["landmark_fit"], report["mean_shape_baseline"], report["texture_fit"]
    return "\n".join([
        "# diffface demo report",
        "",
        f"Model `{report['model']['name']}` ({report['model']['vertices']} vertices, "
        f"{report['model']['id_dims']}/{report['model']['exp_dims']}/{report['model']['tex_dims']} modes), "
        f"{report['num_faces']} synthetic faces, landmark noise {report['landmark_noise_px']} px, "
        f"device {report['device']}.",
        "",
        "| method | vertex error (mm) | median d | landmark RMS vs clean (px) |",
        "|---|---|---|---|",
        f"| mean shape | {base['vertex_error_mm_mean']:.2f} | {base['normalized_error_d_median']:.3f} | |",
        f"| landmark fit | {fit['vertex_error_mm_mean']:.2f} | {fit['normalized_error_d_median']:.3f} | "
        f"{fit['rms_px_vs_clean']:.2f} |",
        *([] if tex is None else [
            f"| texture fit ({tex['norm']}) | {tex['vertex_error_mm_mean']:.2f} | "
            f"{tex['normalized_error_d_median']:.3f} | |"]),
        "",
        f"Landmark fitting ran at {fit['images_per_s']:.1f} images/s"
        + ("." if tex is None else f", texture fitting at {tex['images_per_s']:.2f} images/s.")
        + " `fits.png`: pairs of (synthetic photo with observed landmarks in green and landmark-fit landmarks in "
        "red, the final fit rendered over it: with its fitted albedo and lighting after texture fitting, else with "
        "the mean albedo under the true lighting). `images/`: the photos with their `.pts` landmarks.",
        "",
    ])
