"""Videos: per-frame fitting against shared identity (+ smoothing), stage 1 and 1 + 2, on synthetic sequences.

    python benchmarks/bench_video.py --json [--sequences 4] [--frames 60] [--cache DIR] [--out DIR]
        [--regimes exact,noisy] [--set texture.optimizer=gauss_newton ...]

For each landmark regime (``exact``: the projected true landmarks; ``noisy``: per-point noise plus a
detector-like per-frame offset, scale and jaw slide, drawn anew every frame) the script

1. writes synthetic sequences with ground truth (``diffface synth --sequences N --frames T``; one static head,
   the others turning, drifting and changing expression; cached in ``--cache``);
2. fits stage 1 three ways through the fit job (:func:`~diffface.fitting.job.run_fit_job`, as ``diffface fit``):
   ``per_frame`` (every frame alone), ``shared`` (``--group-by folder``: one identity per sequence) and
   ``shared_smooth`` (``--group-by folder --smooth``); stage 1 + 2 three ways (unless ``--no-texture``):
   ``per_frame_texture``, ``shared_texture`` (one identity and albedo per sequence through both stages) and
   ``shared_smooth_texture``; and ``online``: every sequence frame by frame through
   :class:`~diffface.fitting.sequence_fitting.OnlineLandmarkFitter` (identity fixed after
   ``--online-identity-frames``; in the whole frame, with its true camera, since it sees no crops);
3. evaluates every ``--eval-every``-th frame against its ground-truth mesh exactly as ``diffface evaluate``
   does (ICP onto the scan, AUC of ``d`` over [0, 1], mean mm; rigid, and once more with ``--scale``: a head k
   times larger at k times the distance makes the same frames, so its size is unobservable and the rigid figures
   charge it to every method alike), and every frame's **jitter**: the mean over
   vertices of ``‖v_{t−1} − 2·v_t + v_{t+1}‖`` (mm per frame²) of the fitted mesh in camera space (what a
   user sees move), for static and moving heads, beside the ground truth's own;
4. times stage 1 on one batch of ``--batch`` frames of one subject (frames/s, 2 threads), per frame and with
   shared identity + smoothing, and the online fitter (one frame at a time after the identity is fixed).

Prints a table with the issue's targets as ratios (shared AUC − per-frame AUC ≥ 0.05 with noisy landmarks, in
stage 1 and in stage 1 + 2; smoothed jitter ≤ ½ per-frame jitter with ≤ 0.01 AUC lost; stage 1 with sharing +
smoothing ≥ 25 frames/s at batch 32), or the report with ``--json``; writes ``OUT/report.json``. ``--set`` passes fit-job
settings to the stage 1 + 2 fits (e.g. stage 2 by Levenberg-Marquardt: ``--set texture.optimizer=gauss_newton --set
texture.term=image --set texture.image_term_size=112 --set texture.r_id=0.001 --set texture.rounds=4``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene
from diffface.app.synth_sequences import SequenceConfig, generate_sequences
from diffface.camera import world_to_camera
from diffface.evaluation.evaluate import PredictionSet, evaluate_methods
from diffface.fitting import LandmarkFitConfig, fit_landmarks
from diffface.fitting.frame_groups import FrameGroups
from diffface.fitting.job import FitJobConfig, read_fit_results, run_fit_job
from diffface.fitting.job.groups import list_subjects
from diffface.fitting.job.results import fitted_meshes
from diffface.fitting.sequence_fitting import OnlineLandmarkFitter, SequenceFitConfig, fit_landmarks_sequence
from diffface.landmark_io import read_pts
from diffface.morphable_model import load_morphable_model
from diffface.threads import torch_threads

REGIMES = {
    "exact": {"landmark_noise_px": 0.0},
    # about 5 % of the inter-ocular distance at 224 px, like a good detector on 300W
    "noisy": {"landmark_noise_px": 3.0, "landmark_offset_px": 1.5, "landmark_scale": 0.02, "contour_slide_px": 2.0},
}
METHODS = ("per_frame", "shared", "shared_smooth")
#: stage 1 + 2 (``--stages landmarks,texture``): every frame alone, one identity and albedo per sequence, and the same
#: smoothed (the smoothness prior in both stages)
TEXTURE_METHODS = ("per_frame_texture", "shared_texture", "shared_smooth_texture")


def _cached(folder: Path, settings: dict, make) -> dict:
    """Run ``make()`` into ``folder`` unless ``folder/.bench_settings.json`` records the same settings."""
    import shutil

    marker = folder / ".bench_settings.json"
    if marker.is_file() and json.loads(marker.read_text()).get("settings") == settings:
        return json.loads(marker.read_text())["result"]
    if folder.exists():
        shutil.rmtree(folder)
    result = make()
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"settings": settings, "result": result}))
    return result


def make_sequences(folder: Path, regime: str, args) -> dict:
    scene = replace(benchmark_scene(args.image_size, args.seed), **{"landmark_noise_px": 0.0, **REGIMES[regime]})
    config = SequenceConfig(num_sequences=args.sequences, frames=args.frames,
                            render=SynthBenchmarkConfig(occluder_probability=0.0, scene=scene,
                                                        subdivision_levels=args.subdivision_levels))
    settings = {"regime": regime, "sequences": args.sequences, "frames": args.frames, "seed": args.seed,
                "image_size": args.image_size, "subdivision_levels": args.subdivision_levels}
    return _cached(folder, settings, lambda: {k: v for k, v in generate_sequences(folder, config).items()
                                              if isinstance(v, (int, float, str))})


def fit_method(method: str, images: Path, out: Path, args) -> dict:
    """Every frame through the fit job, one of :data:`METHODS` (stage 1) or :data:`TEXTURE_METHODS` (stage 1 + 2)."""
    texture = method.endswith("_texture")
    method = method.removesuffix("_texture")
    config = FitJobConfig(model="builtin", detector="pts", stages=("landmarks", "texture") if texture else ("landmarks",),
                          num_workers=0, tensorboard=False, progress=False, save_meshes="none")
    if texture:
        config = config.with_overrides(args.set)
    if method == "per_frame":
        subjects, _ = list_subjects(images, "folder")
        source = [item for subject in subjects for item in subject.items]
    else:
        config = replace(config, group_by="folder", sequence=SequenceFitConfig(smooth=method == "shared_smooth"))
        source = images
    started = time.perf_counter()
    figures = run_fit_job(source, out, config)
    return {"seconds": round(time.perf_counter() - started, 2), "fitted": figures["fitted"]}


def fitted_table(out: Path) -> dict:
    """A fit folder's packed parameters and fitted landmarks, by frame name."""
    table = read_fit_results(out)
    names = [str(k).split("/")[-1].rsplit(".", 1)[0] for k in table["key"]]
    return {"params": dict(zip(names, table["params"])), "landmarks": dict(zip(names, table["landmarks"]))}


def jitter(model, fitted: dict, manifest: dict) -> dict:
    """Mean camera-space vertex acceleration (mm/frame²) of the fits and of the truth, static and moving heads,
    and the fitted landmarks' (px/frame²). ``fitted``: :func:`fitted_table`'s dicts."""
    layout = model.layout
    truth = np.load(Path(manifest["root"]) / "params.npz")
    truth_index = {str(n): i for i, n in enumerate(truth["sample_names"])}
    out_figures = {}
    for motion in ("static", "moving"):
        fitted_acc, true_acc, landmark_acc = [], [], []
        for sequence in manifest["sequences"]:
            if sequence["motion"] != motion:
                continue
            names = [s["name"] for s in manifest["samples"] if s["sequence"] == sequence["index"]]
            names = [n for n in names if n in fitted["params"]]
            points = torch.from_numpy(np.stack([fitted["landmarks"][n] for n in names]))
            if len(names) >= 3:  # the fitted landmarks on the image: what an overlay shows move
                landmark_acc.append((points[2:] - 2 * points[1:-1] + points[:-2]).norm(dim=-1).mean(-1))
            for values, accumulate in ((fitted["params"], fitted_acc),
                                       ({n: truth["params"][truth_index[n]] for n in names}, true_acc)):
                params = torch.from_numpy(np.stack([values[n] for n in names]).astype(np.float32))
                p = layout.unpack(params[:, :layout.network_size])
                with torch.no_grad():
                    vertices = world_to_camera(model.shape(p.alpha_id, p.alpha_exp), p.angles, p.translation)
                if len(names) >= 3:
                    second = vertices[2:] - 2 * vertices[1:-1] + vertices[:-2]
                    accumulate.append(second.norm(dim=-1).mean(-1))
        out_figures[motion] = {"fit_mm": float(torch.cat(fitted_acc).mean()) if fitted_acc else None,
                               "landmarks_px": float(torch.cat(landmark_acc).mean()) if landmark_acc else None,
                               "truth_mm": float(torch.cat(true_acc).mean()) if true_acc else None}
    return out_figures


@dataclass(frozen=True)
class _ParamsMesh:
    """A fitted frame given by its packed parameters (for predictions made outside the fit job)."""

    name: str
    params: np.ndarray
    model: object

    def load(self):
        layout, model = self.model.layout, self.model
        p = layout.unpack(torch.from_numpy(self.params[None, :layout.network_size].astype(np.float32)))
        with torch.no_grad():
            vertices = model.shape(p.alpha_id, p.alpha_exp)[0].double().numpy()
        indices = model.landmark_indices.numpy()
        landmarks = vertices[np.clip(indices, 0, None)].copy()
        landmarks[indices < 0] = np.nan
        return vertices, model.triangles.numpy(), landmarks


def fit_online(model, images: Path, identity_frames: int) -> tuple[dict, float]:
    """Every sequence frame by frame through :class:`OnlineLandmarkFitter` (landmarks from the .pts, the frames'
    own camera: focal ``LandmarkFitConfig.focal_px``, principal point at the centre); returns
    :func:`fitted_table`-like dicts and the frames/s."""
    from diffface.landmark_marching import project_landmarks

    subjects, _ = list_subjects(images, "folder")
    model64 = copy.deepcopy(model).double()  # nn.Module.double() works in place
    table, frames, seconds = {"params": {}, "landmarks": {}}, 0, 0.0
    for subject in subjects:
        size = None
        fitter = None
        for item in subject.items:
            landmarks = torch.from_numpy(read_pts(item.path.with_suffix(".pts")))
            if fitter is None:
                with Image.open(item.path) as picture:
                    size = (picture.height, picture.width)
                fitter = OnlineLandmarkFitter(model64, size, identity_frames=identity_frames)
            started = time.perf_counter()
            params = fitter.push(landmarks)
            seconds += time.perf_counter() - started
            frames += 1
            name = item.path.stem
            table["params"][name] = model.layout.pack(params.map(lambda t: t.float())).numpy()[0]
            with torch.no_grad():
                table["landmarks"][name] = project_landmarks(model64, params)[0][0].float().numpy()
    return table, frames / seconds


def accuracy(model, fits: dict[str, Path | dict], truth: Path, every: int, out: Path) -> dict:
    """``diffface evaluate``'s ICP figures on every ``every``-th frame (ground truth linked into one folder), rigid
    (the targets') and, under ``similarity``, aligned with a similarity (``--scale``: without the head's size, which
    no photo tells apart from its distance)."""
    gt = out / "gt_subset"
    gt.mkdir(parents=True, exist_ok=True)
    meshes = sorted(p for p in (truth / "meshes").glob("*.obj"))
    chosen = {p.stem for i, p in enumerate(meshes) if i % every == 0}
    for stem in chosen:
        for suffix in (".obj", "_landmarks.npy"):
            link = gt / f"{stem}{suffix}"
            if not link.exists():
                os.symlink((truth / "meshes" / f"{stem}{suffix}").resolve(), link)
    methods = {}
    for name, source in fits.items():
        if isinstance(source, dict):  # parameters by frame name
            predicted = {n: _ParamsMesh(n, p, model) for n, p in source["params"].items() if n in chosen}
            methods[name] = PredictionSet(out / name, predicted)
            continue
        predicted = {k: v for k, v in fitted_meshes(source, model).items() if k.split("/")[-1].rsplit(".", 1)[0] in chosen}
        methods[name] = PredictionSet(source, predicted)
    report = evaluate_methods(methods, gt, out / "evaluate")
    similarity = evaluate_methods(methods, gt, out / "evaluate_similarity", with_scale=True)["methods"]
    return {name: {**{k: figures[k] for k in ("n", "auc", "median", "mean_mm")},
                   "similarity": {k: similarity[name][k] for k in ("auc", "median", "mean_mm")}}
            for name, figures in report["methods"].items()}


def timing(model, images: Path, batch: int, repeats: int = 3) -> dict:
    """Stage-1 frames/s on the first ``batch`` frames of the first moving sequence (landmarks read from .pts)."""
    subjects, _ = list_subjects(images, "folder")
    moving = subjects[1] if len(subjects) > 1 else subjects[0]
    frames = [read_pts(item.path.with_suffix(".pts")) for item in moving.items[:batch]]
    landmarks = torch.from_numpy(np.stack(frames)).double()
    size = (224, 224)
    groups = FrameGroups(torch.zeros(len(frames), dtype=torch.long), torch.ones(1, dtype=torch.bool))
    runs = {"per_frame": lambda: fit_landmarks(model, landmarks, size, LandmarkFitConfig()),
            "shared_smooth": lambda: fit_landmarks_sequence(model, landmarks, size, groups,
                                                            sequence=SequenceFitConfig(smooth=True))}
    out = {}
    with torch_threads(2):
        for name, run in runs.items():
            run()
            started = time.perf_counter()
            for _ in range(repeats):
                run()
            out[f"{name}_frames_per_s"] = round(repeats * len(frames) / (time.perf_counter() - started), 1)
        fitter = OnlineLandmarkFitter(model, size, identity_frames=min(10, len(frames) - 1))
        for frame in landmarks[:fitter.identity_frames]:
            fitter.push(frame)
        started = time.perf_counter()
        for frame in landmarks[fitter.identity_frames:]:
            fitter.push(frame)
        after = len(frames) - fitter.identity_frames
        out["online_frames_per_s"] = round(after / (time.perf_counter() - started), 1) if after else None
    out["batch"] = len(frames)
    return out


def stage2_timing(images: Path, out: Path, frames: int, settings: list[str]) -> dict:
    """Stage 1 + 2 through the fit job (grouped, smoothed) on the first ``frames`` frames of one moving sequence."""
    import shutil

    subjects, _ = list_subjects(images, "folder")
    moving = subjects[1] if len(subjects) > 1 else subjects[0]
    folder = out / "stage2_input" / moving.name
    if folder.parent.exists():
        shutil.rmtree(folder.parent)
    folder.mkdir(parents=True)
    for item in moving.items[:frames]:
        for path in (item.path, item.path.with_suffix(".pts")):
            os.symlink(path.resolve(), folder / path.name)
    if (out / "stage2_fit").exists():
        shutil.rmtree(out / "stage2_fit")
    config = FitJobConfig(model="builtin", detector="pts", stages=("landmarks", "texture"), num_workers=0,
                          tensorboard=False, progress=False, group_by="folder", sequence=SequenceFitConfig(smooth=True)
                          ).with_overrides(settings)
    started = time.perf_counter()
    with torch_threads(2):
        run_fit_job(folder.parent, out / "stage2_fit", config)
    seconds = time.perf_counter() - started
    return {"frames": frames, "seconds": round(seconds, 1), "stage1_2_frames_per_s": round(frames / seconds, 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--subdivision-levels", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--eval-every", type=int, default=3, help="evaluate every n-th frame by ICP (default 3)")
    parser.add_argument("--batch", type=int, default=32, help="frames per timed batch (default 32)")
    parser.add_argument("--online-identity-frames", type=int, default=30,
                        help="also fit every sequence frame by frame with OnlineLandmarkFitter, the identity fixed "
                             "after this many frames (default 30; 0: skip)")
    parser.add_argument("--no-texture", dest="texture", action="store_false",
                        help="skip the stage 1 + 2 fits (per frame, shared identity + albedo, and smoothed; about 3 "
                             "minutes per regime and method on 2 cores)")
    parser.add_argument("--stage2-frames", type=int, default=16,
                        help="frames of one sequence timed through stage 1 + 2 (grouped, smoothed); 0: skip")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fit-job setting for the stage 1 + 2 fits and their timing, as `diffface fit --set` "
                             "(e.g. texture.optimizer=gauss_newton); repeatable")
    parser.add_argument("--regimes", type=lambda text: text.split(","), default=list(REGIMES),
                        help=f"landmark regimes, comma-separated (default {','.join(REGIMES)}; the targets need noisy)")
    parser.add_argument("--cache", type=Path, default=Path("benchmark_cache/video"))
    parser.add_argument("--out", type=Path, default=Path("benchmark_out/video"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if set(args.regimes) - set(REGIMES) or "noisy" not in args.regimes:
        parser.error(f"--regimes: choose from {', '.join(REGIMES)}, noisy included (the targets are on it); "
                     f"got {','.join(args.regimes)}")
    model = load_morphable_model("builtin")
    report = {"settings": vars(args) | {"cache": str(args.cache), "out": str(args.out)}, "regimes": {}}
    for regime in args.regimes:
        data = args.cache / f"{regime}_seed{args.seed}"
        synth = make_sequences(data, regime, args)
        manifest = json.loads((data / "manifest.json").read_text())
        manifest["root"] = str(data)
        for index, sequence in enumerate(manifest["sequences"]):
            sequence["index"] = index
        for sample in manifest["samples"]:
            if isinstance(sample["sequence"], str):
                sample["sequence"] = [s["name"] for s in manifest["sequences"]].index(sample["sequence"])
        fits, runs = {}, {}
        for method in METHODS + (TEXTURE_METHODS if args.texture else ()):
            folder = args.out / regime / method
            settings = {"data": str(data), "synth": synth, "method": method}
            if method.endswith("_texture") and args.set:
                settings["set"] = args.set
            runs[method] = _cached(folder, settings,
                                   lambda m=method, f=folder: fit_method(m, data / "images", f, args))
            fits[method] = folder
        tables = {method: fitted_table(folder) for method, folder in fits.items()}
        if args.online_identity_frames:
            tables["online"], online_rate = fit_online(model, data / "images", args.online_identity_frames)
            fits["online"] = tables["online"]
        figures = accuracy(model, fits, data, args.eval_every, args.out / regime)
        for method, table in tables.items():
            figures[method]["jitter"] = jitter(model, table, manifest)
            figures[method]["job_seconds"] = runs[method]["seconds"] if method in runs else None
        if "online" in tables:
            figures["online"]["frames_per_s"] = round(online_rate, 1)
        report["regimes"][regime] = {"landmark_error_interocular": synth.get("landmark_error_interocular_mean"),
                                     "methods": figures}
    report["timing"] = timing(model, args.cache / f"noisy_seed{args.seed}" / "images", args.batch)
    if args.stage2_frames:
        report["timing"]["stage2"] = stage2_timing(args.cache / f"noisy_seed{args.seed}" / "images", args.out,
                                                   args.stage2_frames, args.set)
    report["targets"] = targets(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0


def targets(report: dict) -> dict:
    noisy = report["regimes"]["noisy"]["methods"]
    per, shared, smooth = noisy["per_frame"], noisy["shared"], noisy["shared_smooth"]
    moving = lambda m: m["jitter"]["moving"]["fit_mm"]  # noqa: E731
    static = lambda m: m["jitter"]["static"]["fit_mm"]  # noqa: E731
    similarity_ratio = lambda a, b: round(a["similarity"]["mean_mm"] / b["similarity"]["mean_mm"], 4)  # noqa: E731
    gains = {"shared_auc_gain": {"value": round(shared["auc"] - per["auc"], 4), "target": ">= 0.05 (stage 1)"},
             "shared_mm_ratio_similarity": {"value": similarity_ratio(shared, per),
                                            "target": "information (stage 1, similarity ICP)"}}
    if "shared_smooth_texture" in noisy:  # all of TEXTURE_METHODS ran
        per2, shared2, smooth2 = (noisy[f"{m}_texture"] for m in ("per_frame", "shared", "shared_smooth"))
        gains["shared_auc_gain_stage2"] = {"value": round(shared2["auc"] - per2["auc"], 4),
                                           "target": ">= 0.05 (stage 1 + 2 against stage 1 + 2 per frame)"}
        gains["shared_mm_ratio_similarity_stage2"] = {"value": similarity_ratio(shared2, per2),
                                                      "target": "information (stage 1 + 2, similarity ICP)"}
        gains["smooth_jitter_ratio_moving_stage2"] = {"value": round(moving(smooth2) / moving(per2), 4),
                                                      "target": "<= 0.5 (stage 1 + 2)"}
        gains["smooth_auc_change_vs_shared_stage2"] = {"value": round(smooth2["auc"] - shared2["auc"], 4),
                                                       "target": ">= -0.01 (stage 1 + 2)"}
    return gains | {
        "smooth_jitter_ratio_moving": {"value": round(moving(smooth) / moving(per), 4), "target": "<= 0.5"},
        "smooth_jitter_ratio_static": {"value": round(static(smooth) / static(per), 4) if static(per) else None,
                                       "target": "<= 0.5"},
        "smooth_landmark_jitter_ratio_moving": {
            "value": round(smooth["jitter"]["moving"]["landmarks_px"] / per["jitter"]["moving"]["landmarks_px"], 4),
            "target": "<= 0.5"},
        "smooth_auc_change_vs_shared": {"value": round(smooth["auc"] - shared["auc"], 4), "target": ">= -0.01"},
        "smooth_auc_change_vs_per_frame": {"value": round(smooth["auc"] - per["auc"], 4), "target": ">= -0.01"},
        "stage1_shared_smooth_frames_per_s": {"value": report["timing"]["shared_smooth_frames_per_s"],
                                              "target": ">= 25 (batch 32, 2 CPU cores)"},
    }


def print_table(report: dict) -> None:
    for regime, block in report["regimes"].items():
        print(f"\n{regime} landmarks (inter-ocular error {block['landmark_error_interocular']:.3f})")
        print(f"{'method':<23}{'AUC':>8}{'median d':>10}{'mean mm':>9}{'jitter moving':>15}{'jitter static':>15}"
              f"{'truth moving':>14}{'lm jitter px':>14}{'similarity AUC':>16}{'mm':>6}")
        for name, m in block["methods"].items():
            j = m["jitter"]
            print(f"{name:<23}{m['auc']:>8.3f}{m['median']:>10.3f}{m['mean_mm']:>9.2f}{j['moving']['fit_mm']:>15.3f}"
                  f"{(j['static']['fit_mm'] or 0):>15.3f}{j['moving']['truth_mm']:>14.3f}"
                  f"{j['moving']['landmarks_px']:>14.3f}{m['similarity']['auc']:>16.3f}"
                  f"{m['similarity']['mean_mm']:>6.2f}")
    print("\nstage 1 timing:", report["timing"])
    print("targets:")
    for name, t in report["targets"].items():
        print(f"  {name}: {t['value']} (target {t['target']})")


if __name__ == "__main__":
    sys.exit(main())
