"""How close MobileFace comes to the fitting it learned from, in a training run a 2-core machine can afford.

    python benchmarks/network_accuracy.py --json [--minutes M] [--cache DIR] [--out DIR]

Steps (the data steps are cached in ``--cache`` and reused when their settings match):

1. ``diffface synth``: ``--train-faces`` training photos and ``--heldout-faces`` held-out photos (128 px,
   the demo's settings), with ground-truth meshes.
2. ``diffface fit`` stage 1 (landmarks) on every photo; stage 1 + 2 (texture) on the held-out ones.
3. ``diffface build-dataset`` from the training fits (what the method trains on) and, beside it, from the
   synthetic truth (the true parameters: what the fits are missing); the fit dataset is curated
   automatically as the demo does (flagged items rejected).
4. ``diffface train`` with the default recipe (:class:`~diffface.networks.TrainConfig`) for ``--minutes``
   of training on each dataset; the validation AUC is logged against wall-clock minutes.
5. ``diffface predict`` on the held-out photos, ``diffface evaluate`` (ICP, AUC of ``d``, mm) of the mean
   shape, both fits and both networks against the ground-truth meshes, and each method's 2D landmark RMS
   against the observed landmarks.

Writes ``OUT/report.json``, ``OUT/learning_curve.png`` (validation AUC against minutes) and
``OUT/evaluate/ced.png``; prints a table (or the report with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from diffface.app.dataset.build import BuildConfig, build_dataset
from diffface.app.dataset.quality import QualityConfig
from diffface.app.demo_figures import landmark_rms_px, project_landmarks_px
from diffface.app.dataset.auto_curation import curate_automatically
from diffface.evaluation.baselines import ground_truth_names, mean_shape_baseline
from diffface.evaluation.evaluate import evaluate_methods
from diffface.fitting import LandmarkFitConfig, TextureFitConfig
from diffface.fitting.job import FitJobConfig, run_fit_job
from diffface.morphable_model import load_morphable_model
from diffface.networks import TrainConfig, load_checkpoint, train
from diffface.networks.predict import PredictConfig, predict_images
from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark
from diffface.threads import torch_threads

IMAGE_SIZE = 128
FIT_ROUNDS = 3
MAX_LANDMARK_RMS = 0.06  # the demo's: the synthetic landmarks carry about 2 px of noise


def _cached(folder: Path, settings: dict, make) -> dict:
    """Run ``make()`` into ``folder`` unless ``folder/.benchmark_settings.json`` records the same ``settings``;
    a folder without that record (other settings, or a run killed before it finished) is emptied first."""
    import shutil

    marker = folder / ".benchmark_settings.json"
    if marker.is_file() and json.loads(marker.read_text()).get("settings") == settings:
        return {**json.loads(marker.read_text())["figures"], "cached": True}
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    figures = make() or {}
    figures = {**figures, "seconds": round(time.perf_counter() - started, 2)}
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"settings": settings, "figures": figures}, default=str))
    return {**figures, "cached": False}


def make_data(cache: Path, train_faces: int, heldout_faces: int, model, seed: int = 0) -> dict:
    """Synthetic photos, their fits and the two training sets in ``cache`` (each step reused when cached)."""
    figures = {}
    for name, count, offset in (("train", train_faces, 100), ("heldout", heldout_faces, 200)):
        config = SynthBenchmarkConfig(num_faces=count, scene=benchmark_scene(IMAGE_SIZE, seed + offset),
                                      subdivision_levels=0, batch_size=16)
        figures[f"synth_{name}"] = _cached(cache / "synth" / name, {"n": count, "seed": seed + offset},
                                           lambda c=config, n=name: {"faces": c.num_faces, **{
                                               k: v for k, v in generate_benchmark(cache / "synth" / n, c, model=model)
                                               .items() if k == "seconds"}})
        figures[f"synth_{name}"]["faces_per_s"] = count / max(figures[f"synth_{name}"]["seconds"], 1e-9)

    def fit(photos: str, stages: tuple[str, ...], meshes: str, out: Path):
        config = FitJobConfig(model="builtin", detector="pts",
                              detector_options={"annotation_dir": str(cache / "synth" / photos / "images")},
                              stages=stages, batch_size=32, num_workers=0, image_size=IMAGE_SIZE, device="cpu",
                              save_meshes=meshes, tensorboard=False, progress=False,
                              landmarks=LandmarkFitConfig(rounds=FIT_ROUNDS), texture=TextureFitConfig(rounds=1))
        result = run_fit_job(cache / "synth" / photos / "images", out, config)
        return {"fitted": result["summary"]["results"], "images_per_s": result["images_per_s"]}

    for name, photos, stages, meshes in (("train", "train", ("landmarks",), "none"),
                                         ("heldout_landmarks", "heldout", ("landmarks",), "obj"),
                                         ("heldout_texture", "heldout", ("landmarks", "texture"), "obj")):
        count = train_faces if photos == "train" else heldout_faces
        figures[f"fit_{name}"] = _cached(cache / "fits" / name, {"n": count, "stages": stages, "synth": figures[
            f"synth_{photos}"]["seconds"]}, lambda a=(photos, stages, meshes, cache / "fits" / name): fit(*a))

    build = BuildConfig(crop_size=96, val_fraction=0.1, seed=seed, previews=False,
                        quality=QualityConfig(max_landmark_rms=MAX_LANDMARK_RMS))
    for name, source in (("dataset_fits", cache / "fits" / "train"), ("dataset_truth", cache / "synth" / "train")):
        def make(source=source, name=name):
            summary = build_dataset(source, cache / name, build, model=model)
            out = {k: summary[k] for k in ("items", "train", "val", "flagged", "items_per_s")}
            if name == "dataset_fits":
                out["curation"] = curate_automatically(cache / name)
            return out
        figures[name] = _cached(cache / name, {"n": train_faces, "fit": figures["fit_train"]["seconds"]}, make)
    return figures


def steps_for_minutes(dataset: Path, out: Path, config: TrainConfig, minutes: float, probe_steps: int = 20) -> dict:
    """The steps that fill ``minutes`` of training at the rate of a short probe run of ``config`` (its first
    steps, timed after the data is loaded; one validation at the end counted as one more interval)."""
    probe = replace(config, steps=probe_steps, val_every=10 ** 9, checkpoint_every=10 ** 9)
    figures = train(dataset, out, probe)
    seconds_per_step = figures["seconds"] / max(figures["steps_run"], 1)
    steps = max(1, int(minutes * 60 / seconds_per_step))
    return {"steps": steps, "seconds_per_step": seconds_per_step,
            "images_per_s": config.batch_size / seconds_per_step}


def train_network(dataset: Path, out: Path, minutes: float, config: TrainConfig, steps: int = 0) -> dict:
    """Train ``config`` on ``dataset`` for ``steps`` (0: as many as fill about ``minutes``, from a probe run);
    returns its figures and the learning curve."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    if not steps:
        steps = steps_for_minutes(dataset, out / "probe", config, minutes)["steps"]
        shutil.rmtree(out / "probe", ignore_errors=True)
    config = replace(config, steps=steps, val_every=max(1, steps // 12), checkpoint_every=steps)
    started = time.perf_counter()
    figures = train(dataset, out / "run", config)
    curve = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"steps": config.steps, "batch_size": config.batch_size, "lr": config.lr,
            "seconds": round(time.perf_counter() - started, 1), "images_per_s": round(figures["images_per_s"], 1),
            "final_validation": {k[4:]: v for k, v in figures.items() if k.startswith("val/")},
            "curve": [{"minutes": round(c["seconds"] / 60, 3), "step": c["step"], "auc": c["auc"],
                       "mean_shape_auc": c["mean_shape_auc"], "error_mm_mean": c["error_mm_mean"]} for c in curve],
            "checkpoint": str(out / "run" / "model.pt")}


def heldout_landmark_rms(model, cache: Path, predictions: dict[str, Path]) -> dict[str, float]:
    """2D landmark RMS (pixels) of every method's projected landmarks against the observed (noisy) ones of
    the held-out photos; ``predictions``: method -> fit folder or ``diffface predict`` folder."""
    from diffface.fitting.job.results import read_fit_results
    from diffface.landmarks.annotations import read_landmark_file

    images = cache / "synth" / "heldout" / "images"
    out = {}
    for method, folder in predictions.items():
        if (folder / "results").is_dir():
            table = read_fit_results(folder)
            stems = [Path(k).stem for k in table["key"]]
            params = torch.from_numpy(table["params"][:, :model.layout.network_size]).float()
        else:
            files = sorted(folder.glob("*.npz"))
            stems = [f.stem for f in files]
            params = torch.from_numpy(np.stack([np.load(f)["params"] for f in files])).float()
        observed = np.stack([read_landmark_file(images / f"{s}.pts")[0] for s in stems])
        projected = project_landmarks_px(model, model.layout.unpack(params))
        out[method] = landmark_rms_px(projected, observed)
    return out


def plot_learning_curves(curves: dict[str, list[dict]], path: Path, size: tuple[int, int] = (640, 420)) -> Path:
    """Validation AUC against minutes of training, one line per run, the mean shape's AUC dashed (Pillow)."""
    from PIL import Image, ImageDraw, ImageFont

    from diffface.evaluation.plots import COLOURS

    width, height = size
    x0, x1, y0, y1 = 60, width - 20, height - 50, 20
    points = [c for curve in curves.values() for c in curve]
    max_minutes = max([c["minutes"] for c in points] + [1e-3])
    low = min([c["auc"] for c in points] + [c["mean_shape_auc"] for c in points])
    low = max(0.0, np.floor(low * 10) / 10)
    high = min(1.0, np.ceil(max(c["auc"] for c in points) * 10) / 10 + 0.05)
    image = Image.new("RGB", size, "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()

    def px(minutes, value):
        return x0 + (x1 - x0) * minutes / max_minutes, y0 + (y1 - y0) * (value - low) / (high - low)

    for i in range(11):
        gx, gy = px(max_minutes * i / 10, low + (high - low) * i / 10)
        draw.line([(gx, y0), (gx, y1)], fill=(230, 230, 230))
        draw.line([(x0, gy), (x1, gy)], fill=(230, 230, 230))
        draw.text((gx - 8, y0 + 5), f"{max_minutes * i / 10:.2g}", fill="black", font=font)
        draw.text((x0 - 34, gy - 6), f"{low + (high - low) * i / 10:.2f}", fill="black", font=font)
    draw.rectangle([x0, y1, x1, y0], outline="black")
    draw.text(((x0 + x1) / 2 - 90, height - 20), "minutes of training (validation included)", fill="black",
              font=font)
    draw.text((5, 4), "validation AUC (d <= 1, vertex to vertex)", fill="black", font=font)
    for k, (name, curve) in enumerate(curves.items()):
        colour = COLOURS[k % len(COLOURS)]
        line = [(0.0, curve[0]["mean_shape_auc"])] + [(c["minutes"], c["auc"]) for c in curve] if curve else []
        if len(line) > 1:
            draw.line([px(m, a) for m, a in line[1:]], fill=colour, width=2)
            base = curve[0]["mean_shape_auc"]
            for m in np.arange(0, max_minutes, max_minutes / 60)[::2]:  # dashed: the mean shape on this split
                draw.line([px(m, base), px(min(m + max_minutes / 60, max_minutes), base)], fill=colour, width=1)
        ly = y1 + 8 + 16 * k
        draw.line([(x1 - 230, ly + 6), (x1 - 210, ly + 6)], fill=colour, width=3)
        draw.text((x1 - 204, ly), f"{name} (dashed: mean shape)", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def run_benchmark(cache: Path, out: Path, train_faces: int, heldout_faces: int, minutes: float,
                  config: TrainConfig, truth: bool = True, steps: int = 0) -> dict:
    started = time.perf_counter()
    model = load_morphable_model("builtin")
    data = make_data(cache, train_faces, heldout_faces, model)
    networks = {"network (fits)": cache / "dataset_fits"}
    if truth:
        networks["network (true parameters)"] = cache / "dataset_truth"
    training = {name: train_network(dataset, out / name.replace(" ", "_").strip("()").replace("(", ""), minutes,
                                    config, steps) for name, dataset in networks.items()}
    predictions = {"landmark fit": cache / "fits" / "heldout_landmarks",
                   "texture fit": cache / "fits" / "heldout_texture"}
    for name, figures in training.items():
        folder = out / "predict" / name.replace(" ", "_").replace("(", "").replace(")", "")
        regressor = load_checkpoint(figures["checkpoint"])
        predict_images(regressor, cache / "synth" / "heldout" / "images", folder,
                       PredictConfig(landmarks="pts", detector_options={
                           "annotation_dir": str(cache / "synth" / "heldout" / "images")}), model=model)
        predictions[name] = folder
    gt = cache / "synth" / "heldout" / "meshes"
    mean_shape_baseline(model, ground_truth_names(gt), out / "meanshape")
    methods = {"mean shape": out / "meanshape", **predictions}
    report = evaluate_methods(methods, gt, out / "evaluate", landmark_indices=model.landmark_indices.cpu().numpy()
                              .astype(np.int64), allow_missing=True)
    rms = heldout_landmark_rms(model, cache, predictions)
    table = [{"method": name, **{k: m[k] for k in ("n", "n_failed", "auc", "median", "mean_mm", "median_mm")},
              "landmark_rms_px": rms.get(name)} for name, m in report["methods"].items()]
    plot_learning_curves({name: t["curve"] for name, t in training.items()}, out / "learning_curve.png")
    by = {row["method"]: row for row in table}
    net, fit, mean = by["network (fits)"], by["landmark fit"], by["mean shape"]
    targets = {"auc_over_mean_shape": net["auc"] - mean["auc"], "auc_under_landmark_fit": fit["auc"] - net["auc"],
               "landmark_rms_over_fit": net["landmark_rms_px"] / fit["landmark_rms_px"],
               "met": bool(net["auc"] >= mean["auc"] + 0.10 and net["auc"] >= fit["auc"] - 0.05
                           and net["landmark_rms_px"] <= 2 * fit["landmark_rms_px"])}
    result = {"benchmark": "network_accuracy", "train_faces": train_faces, "heldout_faces": heldout_faces,
              "minutes_per_network": None if steps else minutes, "steps_per_network": steps or None, "threads": torch.get_num_threads(), "data": data,
              "training": {name: {k: v for k, v in t.items() if k != "checkpoint"} for name, t in training.items()},
              "table": table, "targets": targets, "learning_curve": str(out / "learning_curve.png"),
              "seconds_total": round(time.perf_counter() - started, 1)}
    result["checkpoints"] = {name: t["checkpoint"] for name, t in training.items()}
    (out / "report.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def save_pretrained(result: dict, path: Path, command: str) -> Path:
    """Copy the network trained on the fits to ``path`` (e.g. the demo's starting point
    ``diffface/pretrained/mobileface_builtin.pt``) and write beside it ``PATH.json``: the command that made it
    and the held-out figures of this run (what the demo cites)."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result["checkpoints"]["network (fits)"], path)
    provenance = {"command": command, "train_faces": result["train_faces"],
                  "training": result["training"]["network (fits)"] | {"curve": None},
                  "heldout": {"faces": result["heldout_faces"], "table": result["table"]}}
    path.with_suffix(".json").write_text(json.dumps(provenance, indent=1, default=str) + "\n")
    return path


def print_table(result: dict) -> None:
    print(f"{'method':28s} {'n':>4s} {'AUC':>6s} {'median d':>9s} {'mean mm':>8s} {'landmark RMS px':>16s}")
    for row in result["table"]:
        rms = "-" if row["landmark_rms_px"] is None else f"{row['landmark_rms_px']:.2f}"
        print(f"{row['method']:28s} {row['n']:4d} {row['auc']:6.3f} {row['median']:9.3f} {row['mean_mm']:8.2f} "
              f"{rms:>16s}")
    for name, t in result["training"].items():
        print(f"{name}: {t['steps']} steps of batch {t['batch_size']} in {t['seconds'] / 60:.1f} min "
              f"({t['images_per_s']:.0f} images/s)")
    print(f"targets: {result['targets']}; total {result['seconds_total'] / 60:.1f} min")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--minutes", type=float, default=20.0, help="training minutes per network (default 20)")
    parser.add_argument("--cache", type=Path, default=Path("benchmark_cache/network_accuracy"),
                        help="folder of the synthetic data, fits and datasets (reused when the sizes match)")
    parser.add_argument("--out", type=Path, default=Path("benchmark_out/network_accuracy"), help="output folder")
    parser.add_argument("--train-faces", type=int, default=3000)
    parser.add_argument("--heldout-faces", type=int, default=100)
    parser.add_argument("--no-truth", action="store_true",
                        help="train only on the fits (not also on the true parameters)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--steps", type=int, default=0,
                        help="training steps per network (default 0: as many as fill --minutes)")
    parser.add_argument("--save-checkpoint", type=Path, metavar="PATH",
                        help="also copy the network trained on the fits to PATH, with PATH.json saying how it "
                             "was made (tools/make_pretrained.sh makes the demo's starting point this way)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="TrainConfig setting on top of the defaults (repeatable)")
    args = parser.parse_args(argv)
    config = replace(TrainConfig(), tensorboard=False, num_workers=0, cpu_threads=args.threads,
                     log_every=50).with_overrides(args.set)
    with torch_threads(args.threads):
        result = run_benchmark(args.cache, args.out, args.train_faces, args.heldout_faces, args.minutes, config,
                               truth=not args.no_truth, steps=args.steps)
    if args.save_checkpoint:
        command = " ".join(["python", "benchmarks/network_accuracy.py", *(argv if argv is not None else sys.argv[1:])])
        save_pretrained(result, args.save_checkpoint, command)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
