"""Evidence: MobileFace trained with the 2D+3D loss against the parameter MSE at equal steps (Fig. 4a).

Draws a synthetic benchmark of the built-in model (``diffface synth``), builds a 96-px training dataset
from its true parameters (``diffface build-dataset``, parameter statistics from the training split), trains
the same network with each loss for the same steps, batch and learning-rate schedule on CPU, and reports
the validation normalised distance d, its AUC and the per-vertex error in mm next to the mean-shape
baseline (the model's mean for every face).

    python benchmarks/network_losses.py --out /tmp/network_losses [--faces 400] [--steps 300] [--json]

Re-running into the same --out reuses the benchmark and the dataset and resumes the training runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_output import add_output_arguments, emit
from diffface.app.dataset.build import BuildConfig, build_dataset
from diffface.networks import TrainConfig, train
from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (benchmark, dataset, runs)")
    parser.add_argument("--faces", type=int, default=400, help="synthetic faces (train + val)")
    parser.add_argument("--image-size", type=int, default=128, help="rendered image side before cropping")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=300, help="training steps per loss")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam rate (x0.1 after 2/3 of the steps)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--losses", default="mse,2d3d", help="comma-separated losses to train")
    parser.add_argument("--norm", default="l2", choices=["l1", "l2"])
    add_output_arguments(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    synth, dataset = args.out / "synth", args.out / "dataset"
    if not (synth / "manifest.json").is_file():
        generate_benchmark(synth, SynthBenchmarkConfig(num_faces=args.faces, scene=benchmark_scene(args.image_size)))
    if not (dataset / "index.json").is_file():
        build_dataset(synth, dataset, BuildConfig(crop_size=96, val_fraction=args.val_fraction, previews=False))
    data_s = time.perf_counter() - started
    result: dict = {"faces": args.faces, "image_size": args.image_size, "steps": args.steps,
                    "batch_size": args.batch_size, "lr": args.lr, "norm": args.norm, "data_s": data_s}
    for loss in args.losses.split(","):
        config = TrainConfig(loss=loss, norm=args.norm, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             lr_final=args.lr / 10, val_every=max(1, args.steps // 3), checkpoint_every=50,
                             num_workers=args.workers, overlay_samples=2)
        start = time.perf_counter()
        figures = train(dataset, args.out / f"run_{loss}", config)
        result[f"{loss}/train_s"] = time.perf_counter() - start
        for key in ("d_mean", "d_median", "auc", "error_mm_mean", "error_px_mean"):
            result[f"{loss}/{key}"] = figures[f"val/{key}"]
        for key in ("d_mean", "auc", "error_mm_mean"):
            result[f"mean_shape/{key}"] = figures[f"val/mean_shape_{key}"]
        result["val_samples"] = figures["val/samples"]

    def table(r: dict) -> None:
        print(f"MobileFace on {r['faces']} synthetic faces ({r['val_samples']} validation), {r['steps']} steps of "
              f"{r['batch_size']}, Adam {r['lr']:g} -> {r['lr'] / 10:g}, CPU")
        print(f"  {'predictor':<22}{'d mean':>9}{'d median':>10}{'AUC':>8}{'mm':>8}{'px':>8}")
        rows = [("mean shape", r["mean_shape/d_mean"], float("nan"), r["mean_shape/auc"],
                 r["mean_shape/error_mm_mean"], float("nan"))]
        for loss in args.losses.split(","):
            rows.append((f"MobileFace, {loss}", r[f"{loss}/d_mean"], r[f"{loss}/d_median"], r[f"{loss}/auc"],
                         r[f"{loss}/error_mm_mean"], r[f"{loss}/error_px_mean"]))
        for name, d, dm, a, mm, px in rows:
            print(f"  {name:<22}{d:>9.3f}{dm:>10.3f}{a:>8.3f}{mm:>8.2f}{px:>8.2f}")

    emit(result, args, table)


if __name__ == "__main__":
    main()
