"""Where stage 2's energy has its minimum: stage 2 started at the true parameters and at stage 1's fit, on
synthetic faces with and without the benchmark's degradations, scored by the distance to the true mesh.

An energy whose minimum lies at the true shape keeps a fit started there near it; one that drifts away
(while its energy goes down) is biased, whatever the optimiser. Three scenes, each ``diffface synth``'s faces
(:mod:`diffface.app.synth_benchmark`, 224² photos, yaw up to ±60°, 2 px landmark noise):

* ``degraded``: the benchmark as it is (image noise, blur, occluders; the true mesh subdivided and displaced
  off the model);
* ``clean``: no noise, blur or occluders (the true mesh still displaced);
* ``exact``: clean, and the true mesh is the model's own (no subdivision, no displacement).

For each scene it prints the texture term at the truth (true shape, pose, albedo and lighting), the same after
the closed-form lighting and albedo solves at the true shape (what the fit's appearance can reach: the albedo
prior's pull shows here), stage 1's error, and for each stage-2 setting the error and texture term of the fit
started at the truth and at stage 1. The error is the mean distance (mm) of the model's vertices to the
corresponding true vertices after a rigid Procrustes alignment (not ``diffface evaluate``'s ICP: a diagnostic,
per vertex). Settings are ``TextureFitConfig`` fields as ``diffface fit --set texture.KEY=VALUE`` takes them.
Last, for both terms, the energy along the straight segment from stage 1's fit to the truth (shape, expression
and pose interpolated, albedo and lighting solved at each point: :func:`segment_profile`), split into its
texture, landmark and prior parts, beside the energy the fit reaches from stage 1.

    python benchmarks/stage2_drift.py [--n 16] [--seed 5] [--scenes degraded clean exact] [--segment-points 5]
        [--variant "NAME=KEY=VALUE[,KEY=VALUE]" ...] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench_output import add_output_arguments, emit, parse_variants
from diffface.alignment import procrustes
from diffface.app.synth import sample_scenes
from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark
from diffface.fitting.job.config import FitJobConfig
from diffface.fitting.landmark_fitting import LandmarkFitConfig, fit_landmarks
from diffface.fitting.texture_fitting import TERMS, TextureFitConfig, _Stage2Energy, fit_texture
from diffface.landmark_io import read_pts
from diffface.landmarks.images import read_image
from diffface.mesh_io import read_obj
from diffface.morphable_model import load_morphable_model

SCENES = ("degraded", "clean", "exact")
DEFAULT_VARIANTS = {"uv (default)": [], "image term": ["term=image"]}


def scene_config(scene: str, model: str, num_faces: int, seed: int) -> SynthBenchmarkConfig:
    """The synth settings of one scene (:data:`SCENES`)."""
    config = SynthBenchmarkConfig(model=model, num_faces=num_faces, scene=benchmark_scene(seed=seed))
    if scene in ("clean", "exact"):
        config = replace(config, noise_std_max=0.0, blur_sigma_max_px=0.0, occluder_probability=0.0)
    if scene == "exact":
        config = replace(config, displacement_mm=(0.0, 0.0), subdivision_levels=0)
    return config


def load_faces(folder: Path, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Photos, observed landmarks and the true meshes' first ``num_vertices`` vertices (the model's own, before
    any subdivision) of a synthetic benchmark.

    Shape:
        -> (N, 3, H, W) in [0, 1], (N, 68, 2) pixels, (N, V, 3) mm.
    """
    names = sorted(path.stem for path in (folder / "images").glob("*.png"))
    images = torch.stack([torch.from_numpy(np.ascontiguousarray(read_image(folder / "images" / f"{n}.png")))
                          .permute(2, 0, 1).float() / 255 for n in names])
    landmarks = torch.stack([torch.from_numpy(read_pts(folder / "images" / f"{n}.pts")).float() for n in names])
    truth = torch.stack([torch.from_numpy(read_obj(folder / "meshes" / f"{n}.obj")[0][:num_vertices]).float()
                         for n in names])
    return images, landmarks, truth


def vertex_error_mm(model, params, truth_vertices: torch.Tensor) -> torch.Tensor:
    """Mean distance of the fitted model vertices to the true ones after rigid Procrustes. Shape: -> (N,)."""
    vertices = model.shape(params.alpha_id.float(), params.alpha_exp.float()).double()
    aligned = procrustes(vertices, truth_vertices.double()).apply(vertices)
    return (aligned - truth_vertices.double()).norm(dim=-1).mean(1)


def texture_config(settings: list[str]) -> TextureFitConfig:
    """A :class:`TextureFitConfig` with ``KEY=VALUE`` settings, applied as ``diffface fit --set texture.KEY=VALUE``."""
    return FitJobConfig().with_overrides([f"texture.{setting}" for setting in settings]).texture


def segment_profile(model, images, landmarks, start, truth, truth_vertices, term: str, points: int) -> list[dict]:
    """Stage 2's energy along the straight segment from ``start`` (stage 1's fit) to the truth.

    At ``t`` in ``linspace(0, 1, points)`` identity, expression, angles and translation are
    ``start + t·(truth − start)`` (the camera is stage 1's); lighting and albedo are solved there as the fit
    solves them (closed form, two alternations). A descent from stage 1 can follow the segment when the
    energy falls along it; where the fit ends lower than anywhere on it, the energy has a minimum off the truth.
    Each point: ``t``, error (mm, as :func:`vertex_error_mm`), total energy and its texture, landmark
    (``c_lands·E_lands``) and prior parts, means over the faces.
    """
    config = TextureFitConfig(term=term, groups=("lighting", "albedo"), rounds=2)
    rows = []
    for t in torch.linspace(0, 1, points).tolist():
        point = replace(start, beta=None, sh=None, **{
            name: getattr(start, name) + t * (getattr(truth, name) - getattr(start, name))
            for name in ("alpha_id", "alpha_exp", "angles", "translation")})
        solved = fit_texture(model, images, landmarks, point, config)
        landmark_part = config.c_lands * solved.landmarks
        rows.append({"t": round(t, 4), "mm": float(vertex_error_mm(model, point, truth_vertices).mean()),
                     "energy": float(solved.energy.mean()), "texture": float(solved.texture.mean()),
                     "landmarks": float(landmark_part.mean()),
                     "priors": float((solved.energy - solved.texture - landmark_part).mean())})
    return rows


def run_scene(model, scene: str, num_faces: int, seed: int, variants: dict[str, list[str]], work: Path,
              segment_points: int = 0) -> dict:
    """One scene's figures (see the module docstring)."""
    config = scene_config(scene, "builtin", num_faces, seed)
    folder = work / scene
    if not (folder / "manifest.json").exists():
        generate_benchmark(folder, config, model=model)
    images, landmarks, truth_vertices = load_faces(folder, model.num_vertices)
    truth = sample_scenes(model, num_faces, config.scene)
    result = {"at_truth": {}, "fits": {}}
    for term in TERMS:
        with torch.no_grad():
            texture = _Stage2Energy(model, images, landmarks, TextureFitConfig(term=term))(truth)["texture"]
        solved = fit_texture(model, images, landmarks, replace(truth, beta=None, sh=None),
                             TextureFitConfig(term=term, groups=("lighting", "albedo"), rounds=1))
        result["at_truth"][term] = {"texture": float(texture.mean()),
                                    "texture_appearance_solved": float(solved.texture.mean())}
    stage1 = fit_landmarks(model, landmarks, tuple(images.shape[-2:]), LandmarkFitConfig())
    result["stage1_mm"] = float(vertex_error_mm(model, stage1.params, truth_vertices).mean())
    for name, settings in variants.items():
        fit_config = texture_config(settings)
        row = {}
        for start_name, start in (("truth", replace(truth, beta=None, sh=None)), ("stage1", stage1.params)):
            started = time.perf_counter()
            fit = fit_texture(model, images, landmarks, start, fit_config)
            row[start_name] = {"mm": float(vertex_error_mm(model, fit.params, truth_vertices).mean()),
                               "texture": float(fit.texture.mean()), "energy": float(fit.energy.mean()),
                               "seconds": time.perf_counter() - started}
        result["fits"][name] = {"settings": settings, **row}
    if segment_points:
        result["segment"] = {term: segment_profile(model, images, landmarks, stage1.params, truth, truth_vertices,
                                                   term, segment_points) for term in TERMS}
    return result


def print_table(result: dict) -> None:
    print(f"stage 2 drift: {result['faces']} faces, seed {result['seed']}; error = mean vertex distance (mm) after "
          "rigid Procrustes; tex = the texture term")
    for scene, figures in result["scenes"].items():
        truth = figures["at_truth"]
        print(f"\n[{scene}] texture term at the truth: uv {truth['uv']['texture']:.4f} (appearance solved "
              f"{truth['uv']['texture_appearance_solved']:.4f}), image {truth['image']['texture']:.4f} "
              f"({truth['image']['texture_appearance_solved']:.4f}); stage 1: {figures['stage1_mm']:.3f} mm")
        print(f"  {'setting':<40} {'from truth mm':>13} {'tex':>7} {'from stage 1 mm':>15} {'tex':>7}")
        for name, row in figures["fits"].items():
            print(f"  {name:<40} {row['truth']['mm']:>13.3f} {row['truth']['texture']:>7.4f} "
                  f"{row['stage1']['mm']:>15.3f} {row['stage1']['texture']:>7.4f}")
        for term, rows in figures.get("segment", {}).items():
            print(f"  segment stage 1 -> truth, {term} term (appearance solved at each point; default fit's energy "
                  f"from stage 1: {_default_energy(figures, term)})")
            print(f"    {'t':>5} {'mm':>7} {'energy':>8} {'texture':>8} {'c·lands':>8} {'priors':>8}")
            for r in rows:
                print(f"    {r['t']:>5.2f} {r['mm']:>7.3f} {r['energy']:>8.4f} {r['texture']:>8.4f} "
                      f"{r['landmarks']:>8.4f} {r['priors']:>8.4f}")


def _default_energy(figures: dict, term: str) -> str:
    """The energy the built-in variant of ``term`` (:data:`DEFAULT_VARIANTS`) reaches from stage 1, for the segment
    table's heading."""
    name = next(name for name, settings in DEFAULT_VARIANTS.items() if texture_config(settings).term == term)
    fit = figures["fits"].get(name)
    return f"{fit['stage1']['energy']:.4f}" if fit else "not run"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="synthetic faces per scene (default 16)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=SCENES)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                        help="an extra stage-2 setting (repeatable; TextureFitConfig fields)")
    parser.add_argument("--segment-points", type=int, default=5,
                        help="points on the segment from stage 1 to the truth where the energy is evaluated with the "
                             "appearance solved (default 5; 0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = {**DEFAULT_VARIANTS, **parse_variants(args.variant)}
    for settings in variants.values():  # bad settings fail before anything is rendered
        texture_config(settings)
    model = load_morphable_model("builtin")
    with tempfile.TemporaryDirectory(prefix="stage2_drift_") as tmp:
        scenes = {scene: run_scene(model, scene, args.n, args.seed, variants, Path(tmp),
                                   args.segment_points) for scene in args.scenes}
    emit({"faces": args.n, "seed": args.seed, "scenes": scenes, "targets": {}}, args, print_table)


if __name__ == "__main__":
    main()
