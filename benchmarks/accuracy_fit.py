"""Fitting accuracy on the synthetic benchmark: mean shape < landmarks < texture, for each norm.

Generates a ``diffface synth`` benchmark (built-in model, yaw up to ±60°, textured backgrounds,
noise, blur, occluders, ground-truth meshes subdivided and displaced outside the model), reads the
photos and ``.pts`` back as a user would, fits stage 1 (landmarks) and stage 2 (texture, with the
l1, l2 and l2,1 norms), and measures the fitted shape against the ground-truth mesh at the model's
vertices (subdivision keeps them first), after a rigid Procrustes alignment:

* ``error_mm``: mean per-vertex distance (mm);
* ``d``: the method's ``100·‖S − S_gt‖² / ‖S_gt − mean(S_gt)‖²`` (median over faces).

    python benchmarks/accuracy_fit.py [--n 32] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from bench_output import add_output_arguments, emit

from diffface.alignment import procrustes
from diffface.evaluation import normalized_distance_d
from diffface.fitting import LandmarkFitConfig, TextureFitConfig, fit_landmarks, fit_texture
from diffface.landmark_io import read_pts
from diffface.landmarks import read_image
from diffface.mesh_io import read_obj
from diffface.morphable_model import load_morphable_model
from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark


def shape_errors(fitted: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-face mean vertex distance (mm) and the method's ``d``, after rigid alignment.

    Shape:
        fitted, truth: (B, V, 3) -> (B,), (B,).
    """
    aligned = procrustes(fitted.double(), truth.double()).apply(fitted.double())
    truth = truth.double()
    return (aligned - truth).norm(dim=-1).mean(-1), normalized_distance_d(aligned, truth)


def load_benchmark(folder: Path, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Photos, landmarks and ground-truth shapes at the model's vertices.

    Shape:
        -> images (B, 3, H, W) in [0, 1], landmarks (B, 68, 2), truth (B, V, 3).
    """
    images, landmarks, truth = [], [], []
    for png in sorted((folder / "images").glob("*.png")):
        images.append(torch.from_numpy(read_image(png)).permute(2, 0, 1).float() / 255)
        landmarks.append(torch.from_numpy(read_pts(png.with_suffix(".pts"))).float())
        vertices, _ = read_obj(folder / "meshes" / f"{png.stem}.obj")
        truth.append(torch.from_numpy(vertices[:num_vertices]).float())
    return torch.stack(images), torch.stack(landmarks), torch.stack(truth)


def run(num_faces: int, texture_config: TextureFitConfig, seed: int = 0, image_size: int = 224) -> dict:
    model = load_morphable_model("builtin")
    with tempfile.TemporaryDirectory() as tmp:
        config = SynthBenchmarkConfig(num_faces=num_faces, scene=benchmark_scene(image_size, seed), backend="builtin")
        generate_benchmark(tmp, config, model=model)
        images, landmarks, truth = load_benchmark(Path(tmp), model.num_vertices)
    rows = {}

    def record(name: str, vertices: torch.Tensor, seconds: float | None) -> None:
        error_mm, d = shape_errors(vertices, truth)
        rows[name] = {"error_mm": round(float(error_mm.mean()), 3), "d_median": round(float(d.median()), 4),
                      "seconds": None if seconds is None else round(seconds, 2),
                      "images_per_s": None if seconds is None else round(num_faces / seconds, 3)}

    record("mean shape", model.mean_shape.expand_as(truth), None)
    start = time.perf_counter()
    stage1 = fit_landmarks(model, landmarks, (image_size, image_size),
                           LandmarkFitConfig(focal_px=config.scene.focal_px))
    record("landmarks", model.shape(stage1.params.alpha_id, stage1.params.alpha_exp), time.perf_counter() - start)
    for norm in ("l2", "l1", "l21"):
        start = time.perf_counter()
        stage2 = fit_texture(model, images, landmarks, stage1.params, replace(texture_config, norm=norm))
        record(f"texture {norm}", model.shape(stage2.params.alpha_id, stage2.params.alpha_exp),
               time.perf_counter() - start)
    return {"faces": num_faces, "image_size": image_size, "seed": seed, "threads": torch.get_num_threads(),
            "texture_config": {"rounds": texture_config.rounds, "steps_per_group": texture_config.steps_per_group,
                               "uv_size": texture_config.uv_size},
            "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="synthetic faces (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="8 faces, 1 texture round")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    texture = TextureFitConfig(rounds=1) if args.quick else TextureFitConfig()
    emit(run(8 if args.quick else args.n, texture, args.seed), args, print_table)


def print_table(result: dict) -> None:
    print(f"{result['faces']} synthetic faces at {result['image_size']} px, {result['threads']} threads")
    print(f"{'method':<12} {'error mm':>9} {'median d':>9} {'images/s':>9}")
    for name, row in result["rows"].items():
        speed = "-" if row["images_per_s"] is None else f"{row['images_per_s']:.2f}"
        print(f"{name:<12} {row['error_mm']:>9.3f} {row['d_median']:>9.4f} {speed:>9}")


if __name__ == "__main__":
    main()
