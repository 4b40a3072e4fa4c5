"""``diffface demo``: the whole pipeline, end to end, offline, in a few minutes on a CPU.

Steps, each writing into its own subfolder of ``DIR`` (a failing step raises :class:`DemoStepError`
naming it)::

    inputs/     synthetic photos with ground truth (``diffface synth``): a training set and a held-out
                set; or, with ``images=``, the user's photos split into train/ and heldout/ (hard links)
    landmarks/  68 landmarks per photo as .pts (``diffface landmarks``: read from the synthetic .pts
                files, or detected with dlib / FAN on real photos)
    fits/       train/ stage 1 (landmarks); heldout_landmarks/ stage 1 and heldout_texture/ stage 1 + 2
                (texture), with meshes (``diffface fit``)
    dataset/    training pairs from the training fits (``diffface build-dataset``), automatically
                curated: the items whose automatic quality flags are raised are rejected
    train/      the regressor (MobileFace, 96 px), trained briefly (``diffface train``)
    export/     TorchScript and ONNX files with their parity against eager PyTorch (``diffface export``)
    predict/    the network's parameters and meshes on the held-out photos (``diffface predict``)
    evaluate/   mean shape, landmark fit, texture fit and network against the ground-truth meshes:
                AUC, median d, mm errors, CED (``diffface evaluate``); skipped without ground truth
    figures/    held-out photos with landmarks, rendered fits and network predictions

and ``DIR/report.json``, ``DIR/report.html`` (self-contained, :mod:`diffface.report_html`) and
``DIR/config.json``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .atomic_io import write_text_atomic
from .morphable_model import MorphableModel, load_morphable_model
from .report_images import overlay_landmarks, save_panel_grid, to_uint8_image
from .threads import torch_threads

SETS = ("train", "heldout")
LANDMARK_INDICES = "evaluate/landmark_indices.npy"  # the model's 68 landmark vertices, for the CLI
GRID_PANEL_PX = 256  # larger photos are shrunk to this side in the report's grid
METHODS = {  # evaluated method -> folder of its meshes, relative to DIR
    "mean shape": "evaluate/meanshape",
    "landmark fit": "fits/heldout_landmarks",
    "texture fit": "fits/heldout_texture",
    "network": "predict",
}


class DemoStepError(RuntimeError):
    """A step of the demo failed; the message names the step and its output folder."""


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo` (saved as ``DIR/config.json``); the defaults take a few minutes on 2 CPU cores.

    Attributes:
        model: ``"builtin"`` or a morphable-model file (e.g. a converted BFM).
        images: a folder of the user's photos (no ground truth); None: synthetic faces.
        landmarks: how to landmark the photos: ``pts`` (files beside them), ``dlib``, ``fan`` or ``auto``.
        device: ``cpu`` or ``cuda``.
        seed: seed of the synthetic faces, the split and training.
        train_faces: synthetic training photos (stage-1 fits become the dataset).
        heldout_faces: held-out photos (synthetic: with ground-truth meshes); with ``images``, how many of
            the user's photos are held out from training.
        image_size: side of the synthetic photos (pixels).
        subdivision_levels: midpoint subdivisions of the synthetic ground-truth meshes (0 keeps the
            evaluation fast; the ground truth is still displaced off the model).
        fit_image_size: side of the crop both fitting stages work in.
        fit_rounds, texture_rounds: rounds of stage 1 and stage 2.
        texture_norm: norm of the stage-2 texture term.
        val_fraction: share of the dataset held for validation during training.
        max_landmark_rms: the dataset's ``landmark_residual`` flag threshold (fraction of the crop side): the
            synthetic landmarks carry about 2 px of noise, which the default (0.03) flags almost everywhere.
        curate_worst_fraction: besides the flagged items, also reject this share of the worst-scoring ones.
        train_steps, batch_size, lr, width, augment: the brief training run (MobileFace width, Adam rate,
            photometric augmentation). On 1,000 synthetic fits, 600 steps of batch 64 at 3e-3 reached a validation
            AUC of 0.794 with augmentation against 0.750 without (it costs 40 % more time per step); 160 faces
            and 400 steps of batch 16 (the earlier defaults) did not reliably beat the mean shape.
        export_formats: formats written by the export step.
        preview_faces: held-out faces shown in the report's grid.
        threads: PyTorch CPU threads during the run (restored after); 0: PyTorch's default (one per core).
            1 by default: on a machine busy with other work, PyTorch's OpenMP threads wait on each other
            (a MobileFace training step took 15x longer with 2 threads than with 1 on a loaded 2-core machine).
    """

    model: str = "builtin"
    images: str | None = None
    landmarks: str = "pts"
    device: str = "cpu"
    seed: int = 0
    train_faces: int = 800
    heldout_faces: int = 8
    image_size: int = 128
    subdivision_levels: int = 0
    fit_image_size: int = 128
    fit_rounds: int = 3
    texture_rounds: int = 1
    texture_norm: str = "l21"
    val_fraction: float = 0.1
    max_landmark_rms: float = 0.06
    curate_worst_fraction: float = 0.0
    train_steps: int = 500
    batch_size: int = 64
    lr: float = 3e-3
    width: int = 10
    augment: bool = True
    export_formats: tuple[str, ...] = ("torchscript", "onnx")
    preview_faces: int = 6
    threads: int = 1

    def __post_init__(self):
        from diffface.networks.export.config import FORMATS

        self.export_formats = tuple(self.export_formats)
        unknown = [name for name in self.export_formats if name not in FORMATS]
        if unknown:
            raise ValueError(f"demo setting export_formats: unknown {unknown}; choose from {', '.join(FORMATS)}")
        for name, low in (("train_faces", 2), ("heldout_faces", 1), ("image_size", 64), ("fit_image_size", 32),
                          ("fit_rounds", 1), ("texture_rounds", 0), ("train_steps", 1), ("batch_size", 1),
                          ("width", 1), ("preview_faces", 0), ("subdivision_levels", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"demo setting {name} must be at least {low}, got {getattr(self, name)}")
        if self.threads < 0:
            raise ValueError(f"demo setting threads must be 0 (PyTorch's default) or more, got {self.threads}")
        if not 0 < self.val_fraction < 1 or not 0 <= self.curate_worst_fraction < 1:
            raise ValueError("demo settings val_fraction must be in (0, 1) and curate_worst_fraction in [0, 1)")

    @classmethod
    def quick(cls, **changes) -> "DemoConfig":
        """Tiny sizes for tests and a first look (about a minute on 2 CPU cores); ``changes`` override them."""
        return replace(cls(train_faces=24, heldout_faces=2, image_size=96, fit_image_size=96, fit_rounds=2,
                           val_fraction=0.25, train_steps=6, batch_size=8, width=4, augment=False, preview_faces=3),
                       **changes)

    @property
    def has_ground_truth(self) -> bool:
        return self.images is None


@dataclass
class DemoRun:
    """What the steps share: the output folder, settings, model and the figures of the steps done so far."""

    out: Path
    config: DemoConfig
    model: MorphableModel
    show_progress: bool
    steps: dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


# -- the steps -------------------------------------------------------------------------------------

def step_inputs(run: DemoRun) -> dict:
    """Synthetic train and held-out photos with ground truth, or the user's photos split in two."""
    from .synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark

    config = run.config
    if not config.has_ground_truth:
        return _split_user_images(Path(config.images), run.path("inputs"), config.heldout_faces)
    figures = {}
    for offset, (name, count) in enumerate((("train", config.train_faces), ("heldout", config.heldout_faces))):
        synth = SynthBenchmarkConfig(model=config.model, num_faces=count, device=config.device,
                                     scene=benchmark_scene(config.image_size, config.seed + offset),
                                     subdivision_levels=config.subdivision_levels, batch_size=16)
        summary = generate_benchmark(run.path("inputs", name), synth, model=run.model)
        figures[name] = {"faces": count, "seconds": summary.get("seconds")}
    return figures


def _split_user_images(folder: Path, out: Path, heldout: int) -> dict:
    """Hard-link the last ``heldout`` photos (sorted) and their annotations into ``out/heldout``, the rest
    into ``out/train`` (copies across file systems). Not symbolic links: the fit job resolves those and
    would file the results under the photos' real folder."""
    from .landmarks import list_images

    images = list_images(folder) if folder.is_dir() else []
    if len(images) < heldout + 2:
        raise FileNotFoundError(f"{folder}: need at least {heldout + 2} photos (2 to train on, {heldout} held out), "
                                f"found {len(images)}")
    parts = {"train": images[:-heldout], "heldout": images[-heldout:]}
    for name, paths in parts.items():
        target = out / name / "images"
        target.mkdir(parents=True, exist_ok=True)
        for image in paths:
            for source in [image, *(image.with_suffix(s) for s in (".pts", ".json", ".npy"))]:
                if source.is_file() and not (target / source.name).exists():
                    try:
                        os.link(source, target / source.name)
                    except OSError:
                        shutil.copy2(source, target / source.name)
    return {name: {"faces": len(paths)} for name, paths in parts.items()}


def step_landmarks(run: DemoRun) -> dict:
    """68 landmarks of every photo as ``landmarks/<set>/NAME.pts``; photos where no face is found are
    moved aside to ``inputs/<set>/no_face/`` so that the later steps see only usable ones."""
    from .landmarks import LandmarkJobConfig, landmark_images, list_images, make_detector

    detector = make_detector(run.config.landmarks)
    figures = {}
    for name in SETS:
        report = landmark_images(list_images(run.path("inputs", name, "images")), detector,
                                 run.path("landmarks", name), LandmarkJobConfig())
        if report["ok"] + report["skipped"] == 0:
            raise ValueError(f"no face landmarked in inputs/{name} ({report['failures'][:1]})")
        for failure in report["failures"]:
            aside = run.path("inputs", name, "no_face")
            aside.mkdir(exist_ok=True)
            Path(failure["image"]).rename(aside / Path(failure["image"]).name)
        figures[name] = {k: report[k] for k in ("detector", "images", "ok", "failed")}
    return figures


def _fit_config(run: DemoRun, landmark_set: str, stages: tuple[str, ...], meshes: str):
    from diffface.fitting import LandmarkFitConfig, TextureFitConfig
    from diffface.fitting.job import FitJobConfig

    config = run.config
    return FitJobConfig(model=config.model, detector="pts",
                        detector_options={"annotation_dir": str(run.path("landmarks", landmark_set))},
                        stages=stages, batch_size=32, num_workers=0, image_size=config.fit_image_size,
                        device=config.device, save_meshes=meshes, tensorboard=False, progress=run.show_progress,
                        landmarks=LandmarkFitConfig(rounds=config.fit_rounds),
                        texture=TextureFitConfig(rounds=config.texture_rounds, norm=config.texture_norm))


FIT_JOBS = {  # fit folder -> (photo set, stages, meshes)
    "train": ("train", ("landmarks",), "none"),
    "heldout_landmarks": ("heldout", ("landmarks",), "obj"),
    "heldout_texture": ("heldout", ("landmarks", "texture"), "obj"),
}


def step_fit(run: DemoRun) -> dict:
    """Stage 1 on every photo; stage 1 + 2 on the held-out ones."""
    from diffface.fitting.job import run_fit_job

    figures = {}
    for name, (photos, stages, meshes) in FIT_JOBS.items():
        if "texture" in stages and run.config.texture_rounds == 0:
            continue
        result = run_fit_job(run.path("inputs", photos, "images"), run.path("fits", name),
                             _fit_config(run, photos, stages, meshes))
        summary = result["summary"]
        if summary["results"] == 0:
            raise ValueError(f"no photo of inputs/{photos} could be fitted: {summary['failures'][:1]}")
        figures[name] = {"fitted": summary["results"], "failed": summary["failed"],
                         "images_per_s": result["images_per_s"], "flags": summary["flags"]}
    return figures


def step_dataset(run: DemoRun) -> dict:
    """Training pairs (96 px crops, parameters in the crop camera, ground truth) from the training fits."""
    from .data.build import BuildConfig, build_dataset
    from .data.quality import QualityConfig

    config = BuildConfig(crop_size=96, val_fraction=run.config.val_fraction, seed=run.config.seed, previews=False,
                         device=run.config.device, model=run.config.model,
                         quality=QualityConfig(max_landmark_rms=run.config.max_landmark_rms))
    summary = build_dataset(run.path("fits", "train"), run.path("dataset"), config, model=run.model)
    return {k: summary[k] for k in ("items", "skipped", "train", "val", "flagged", "items_per_s")}


def curate_automatically(dataset: str | Path, worst_fraction: float = 0.0) -> dict:
    """Reject (in ``curation.jsonl``) every item whose automatic quality flags are raised, and the
    ``worst_fraction`` of the rest with the highest quality score.

    Returns:
        ``kept``, ``rejected`` counts, ``rejected_by_flag`` (flag -> count), ``train_kept``, ``val_kept``.

    Raises:
        ValueError: when no training item would be left.
    """
    from .data.format import CURATION_NAME, append_decision, read_index

    entries = read_index(dataset)
    flagged = [e for e in entries if e.flags]
    rest = sorted((e for e in entries if not e.flags), key=lambda e: -float(e.quality.get("score", 0.0)))
    worst = rest[:int(worst_fraction * len(entries))]
    rejected = {e.name for e in flagged + worst}
    kept = [e for e in entries if e.name not in rejected]
    if sum(e.split == "train" for e in kept) < 2:
        raise ValueError(f"{dataset}: fewer than 2 training items are left unflagged; nothing to train on "
                         f"({len(flagged)} of {len(entries)} items flagged)")
    (Path(dataset) / CURATION_NAME).touch()  # an empty log: nothing rejected
    for entry in flagged + worst:
        append_decision(dataset, entry.name, "reject")
    by_flag: dict[str, int] = {}
    for entry in flagged:
        for flag in entry.flags:
            by_flag[flag] = by_flag.get(flag, 0) + 1
    return {"kept": len(kept), "rejected": len(rejected), "rejected_by_flag": by_flag,
            "train_kept": sum(e.split == "train" for e in kept), "val_kept": sum(e.split == "val" for e in kept)}


def step_curate(run: DemoRun) -> dict:
    return curate_automatically(run.path("dataset"), run.config.curate_worst_fraction)


def step_train(run: DemoRun) -> dict:
    """A brief training run of MobileFace on the curated dataset."""
    from diffface.networks import TrainConfig, train

    config = run.config
    steps = config.train_steps
    train_config = TrainConfig(width=config.width, steps=steps, batch_size=config.batch_size, lr=config.lr,
                               lr_final=config.lr / 10, augment=config.augment, val_every=steps,
                               checkpoint_every=steps, log_every=max(1, steps // 10), tensorboard=False,
                               seed=config.seed, num_workers=0, device=config.device)
    figures = train(run.path("dataset"), run.path("train"), train_config)
    return {"steps": steps, **{k: v for k, v in figures.items() if isinstance(v, (int, float, str, dict))}}


def step_export(run: DemoRun) -> dict:
    """The trained network as TorchScript and ONNX files, each checked against eager PyTorch."""
    from diffface.landmarks import list_images
    from diffface.networks.export import SUFFIXES, ExportConfig, export_checkpoint

    # the parity check crops real photos around the .pts annotations beside them (random crops besides)
    real = [p for p in list_images(run.path("inputs", "heldout", "images")) if p.with_suffix(".pts").is_file()][:4]
    figures = {}
    for name in run.config.export_formats:
        result = export_checkpoint(run.path("train", "model.pt"), run.path("export", f"model{SUFFIXES[name]}"),
                                   ExportConfig(format=name), real_images=real).to_dict()
        figures[name] = {"file": Path(result["path"]).name, "size_mb": result["size_mb"],
                         "parity_max_abs_error": result["parity"]["max_abs_error"],
                         "parity_passed": result["parity"]["passed"]}
    return {"formats": figures, "parity_images": [p.name for p in real]}


def step_predict(run: DemoRun) -> dict:
    """The network's parameters and meshes for the held-out photos."""
    from diffface.networks import load_checkpoint
    from diffface.networks.predict import PredictConfig, predict_images

    regressor = load_checkpoint(run.path("train", "model.pt"))
    config = PredictConfig(landmarks="pts", detector_options={"annotation_dir": str(run.path("landmarks", "heldout"))})
    started = time.perf_counter()
    written = predict_images(regressor, run.path("inputs", "heldout", "images"), run.path("predict"), config,
                             model=run.model).written
    return {"images": len(written), "images_per_s": len(written) / max(time.perf_counter() - started, 1e-9)}


def step_evaluate(run: DemoRun) -> dict:
    """Every method's meshes against the ground truth (ICP-aligned): AUC, median d, mm errors and the CED."""
    if not run.config.has_ground_truth:
        return {"ground_truth": False}
    from .evaluation.baselines import ground_truth_names, mean_shape_baseline
    from .evaluation.evaluate import evaluate_methods

    gt = run.path("inputs", "heldout", "meshes")
    mean_shape_baseline(run.model, ground_truth_names(gt), run.path(METHODS["mean shape"]))
    methods = {name: run.path(folder) for name, folder in METHODS.items() if run.path(folder).is_dir()}
    indices = run.model.landmark_indices.cpu().numpy().astype(np.int64)
    np.save(run.path(LANDMARK_INDICES), indices)  # for `diffface evaluate --landmarks`
    # a face a method failed on counts as its failure in the report, not as an error of the demo
    report = evaluate_methods(methods, gt, run.path("evaluate"), landmark_indices=indices, allow_missing=True)
    return {"ground_truth": True, "methods": {
        name: {k: m[k] for k in ("n", "n_failed", "auc", "median", "mean_mm", "median_mm")}
        for name, m in report["methods"].items()}}


def step_figures(run: DemoRun) -> dict:
    """A grid row per held-out photo: the photo with observed (green) and fitted (red) landmarks, then
    each method's reconstruction rendered over it; and each method's 2D landmark RMS error."""
    from PIL import ImageOps

    from .landmarks import list_images

    params, observed, images = _heldout_parameters(run, list_images(run.path("inputs", "heldout", "images")))
    if not images:
        raise ValueError("no held-out photo was reconstructed by every method")
    projected = {method: project_landmarks_px(run.model, p) for method, p in params.items()}
    landmark_rms = {method: landmark_rms_px(fitted, observed) for method, fitted in projected.items()}
    shown = images[:run.config.preview_faces]
    # photos of any size and shape in one grid: each panel padded to a square of the largest side
    side = min(GRID_PANEL_PX, max((max(Image.open(p).size) for p in shown), default=1))
    panels = []
    for i, path in enumerate(shown):
        photo = np.array(Image.open(path).convert("RGB"))
        landmark_sets = [(observed[i], (80, 255, 80))]
        if "landmark fit" in projected:
            landmark_sets.append((projected["landmark fit"][i], (255, 60, 60)))
        row = [overlay_landmarks(photo, landmark_sets)]
        row += [Image.fromarray(_render_over(run.model, p.index(slice(i, i + 1)), photo)) for p in params.values()]
        panels += [ImageOps.pad(panel, (side, side)) if panel.size != (side, side) else panel for panel in row]
    grid = None
    if panels:
        run.path("figures").mkdir(parents=True, exist_ok=True)
        grid = save_panel_grid(panels, run.path("figures", "grid.png"), columns=1 + len(params))
    return {"grid": None if grid is None else "figures/grid.png", "grid_columns": ["photo + landmarks", *params],
            "photos": len(images), "landmark_rms_px": landmark_rms}


def _heldout_parameters(run: DemoRun, images: list[Path]):
    """Each method's parameters (photo frame) and the observed landmarks (N, 68, 2) of the held-out photos
    that every method reconstructed (a photo whose fit failed is left out), and those photos."""
    from diffface.fitting.job.results import read_fit_results

    from .landmarks.annotations import read_landmark_file

    model = run.model
    rows = {}
    for method in ("landmark fit", "texture fit"):
        if run.path(METHODS[method]).is_dir():
            table = read_fit_results(run.path(METHODS[method]))
            rows[method] = (table, {Path(key).stem: row for row, key in enumerate(table["key"])})
    images = [p for p in images if run.path("predict", f"{p.stem}.npz").is_file()
              and all(p.stem in by_stem for _, by_stem in rows.values())]
    stems = [p.stem for p in images]
    params = {method: model.layout.unpack(torch.from_numpy(table["params"][[by_stem[s] for s in stems]]).float())
              for method, (table, by_stem) in rows.items()}
    params["network"] = model.layout.unpack(torch.from_numpy(np.stack(
        [np.load(run.path("predict", f"{s}.npz"))["params"] for s in stems])).float())
    observed = np.stack([read_landmark_file(run.path("landmarks", "heldout", f"{s}.pts"))[0] for s in stems])
    return {k: v.to(model.mean_shape.device) for k, v in params.items()}, observed, images


def landmark_rms_px(projected: np.ndarray, observed: np.ndarray) -> float:
    """RMS distance (pixels) of projected landmarks from the observed ones, over every finite landmark.
    Shape: (N, 68, 2), (N, 68, 2) -> scalar."""
    return float(np.sqrt(np.nanmean(((projected - observed) ** 2).sum(-1))))


def project_landmarks_px(model: MorphableModel, params) -> np.ndarray:
    """The 68 landmarks of unpacked parameters projected into their image. Shape: batch B -> (B, 68, 2)."""
    from .landmark_marching import project_landmarks

    with torch.no_grad():
        landmarks, _ = project_landmarks(model, params, model.shape(params.alpha_id, params.alpha_exp))
    return landmarks.cpu().numpy()


def _render_over(model: MorphableModel, params, photo: np.ndarray) -> np.ndarray:
    """One face rendered over its photo: with its own albedo and light where fitted (stage 2), else
    blended in with the mean albedo under a frontal light. Shape: params batch 1; photo (H, W, 3) uint8."""
    from diffface.networks.visualize import prediction_overlays
    from diffface.renderers import FaceRenderer

    image = torch.from_numpy(photo).to(model.mean_shape.device).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        if params.sh is not None and params.beta is not None:
            rendered = FaceRenderer(model, image.shape[-2:], backend="builtin")(params, image).images[0]
        else:
            rendered = prediction_overlays(model, replace(params, beta=None, sh=None), image)[0]
    return to_uint8_image(rendered)


STEPS: dict[str, Callable[[DemoRun], dict]] = {
    "inputs": step_inputs, "landmarks": step_landmarks, "fit": step_fit, "dataset": step_dataset,
    "curate": step_curate, "train": step_train, "export": step_export, "predict": step_predict,
    "evaluate": step_evaluate, "figures": step_figures,
}
STEP_OUTPUTS = {"inputs": "inputs", "landmarks": "landmarks", "fit": "fits", "dataset": "dataset",
                "curate": "dataset/curation.jsonl", "train": "train/model.pt", "export": "export",
                "predict": "predict", "evaluate": "evaluate", "figures": "figures"}


# -- commands that reproduce each step -------------------------------------------------------------

def reproduce_commands(config: DemoConfig, out: str | Path, parity_images: list[str] = ()) -> dict[str, list[str]]:
    """The ``diffface`` command lines that redo each step of a run into ``out`` (shell-quoted);
    ``parity_images``: the held-out photos the export's parity check also runs on."""
    from diffface.networks.export.config import SUFFIXES

    d = lambda *parts: shlex.quote(str(Path(out).joinpath(*parts)))  # noqa: E731
    model = [] if config.model == "builtin" else ["--model", shlex.quote(config.model)]
    device = [] if config.device == "cpu" else ["--device", config.device]
    if config.has_ground_truth:
        inputs = [" ".join(["diffface synth", "--out", d("inputs", name), "--n", str(n), "--seed", str(config.seed + k),
                            "--image-size", str(config.image_size), *model, *device])
                  + (f"  # the demo also sets subdivision_levels={config.subdivision_levels}"
                     if config.subdivision_levels != 1 else "")
                  for k, (name, n) in enumerate((("train", config.train_faces), ("heldout", config.heldout_faces)))]
    else:
        inputs = [f"# the last {config.heldout_faces} photos of {shlex.quote(config.images)} (sorted) are held out: "
                  f"{d('inputs', 'heldout', 'images')}; the others: {d('inputs', 'train', 'images')}"]
    fit = []
    for name, (photos, stages, meshes) in FIT_JOBS.items():
        if "texture" in stages and config.texture_rounds == 0:
            continue
        fit.append(" ".join([
            "diffface fit", d("inputs", photos, "images"), "--out", d("fits", name), "--landmarks pts",
            "--annotations", d("landmarks", photos), "--stages", ",".join(stages), *model, *device,
            *([] if meshes == "none" else ["--meshes", meshes]), "--workers 0 --no-tensorboard",
            f"--set image_size={config.fit_image_size} --set landmarks.rounds={config.fit_rounds}",
            *([f"--set texture.rounds={config.texture_rounds} --set texture.norm={config.texture_norm}"]
              if "texture" in stages else [])]))
    steps = config.train_steps
    commands = {
        "inputs": inputs,
        "landmarks": [f"diffface landmarks {d('inputs', s, 'images')} --detector {config.landmarks} "
                      f"--out {d('landmarks', s)}" for s in SETS],
        "fit": fit,
        "dataset": [f"diffface build-dataset {d('fits', 'train')} --out {d('dataset')} --crop-size 96 "
                    f"--val-fraction {config.val_fraction} --seed {config.seed} --no-previews "
                    f"--set quality.max_landmark_rms={config.max_landmark_rms}"
                    + (" " + " ".join(model) if model else "") + (" " + " ".join(device) if device else "")],
        "curate": [f"python -c 'from diffface.demo import curate_automatically; "
                   f"print(curate_automatically(\"{Path(out) / 'dataset'}\", {config.curate_worst_fraction}))'",
                   f"diffface curate {d('dataset')}  # or review the fits in the browser"],
        "train": [f"diffface train {d('dataset')} --out {d('train')} --steps {steps} --batch-size {config.batch_size} "
                  f"--lr {config.lr} --width {config.width} --workers 0 --seed {config.seed}" + "".join(
                      f" --set {k}={v}" for k, v in (("lr_final", f"{config.lr / 10:g}"),
                                                     ("augment", str(config.augment).lower()), ("val_every", steps),
                                                     ("checkpoint_every", steps), ("tensorboard", "false")))
                  + (" " + " ".join(device) if device else "")],
        "export": [f"diffface export {d('train', 'model.pt')} --format {name} "
                   f"--out {d('export', 'model' + SUFFIXES[name])}"
                   + "".join(f" --image {d('inputs', 'heldout', 'images', p)}" for p in parity_images)
                   for name in config.export_formats],
        "predict": [f"diffface predict {d('train', 'model.pt')} {d('inputs', 'heldout', 'images')} "
                    f"--out {d('predict')} "
                    f"--landmarks pts --annotations {d('landmarks', 'heldout')} --meshes obj"],
        "evaluate": ([f"diffface baselines --gt {d('inputs', 'heldout', 'meshes')} --out {d('evaluate')} --meanshape"
                      + "".join(" " + m for m in model),
                      "diffface evaluate --compare " + " ".join(
                          shlex.quote(f"{name.replace(' ', '-')}={Path(out) / folder}")
                          for name, folder in METHODS.items()
                          if not (name == "texture fit" and config.texture_rounds == 0))
                      + f" --gt {d('inputs', 'heldout', 'meshes')} --landmarks {d(LANDMARK_INDICES)} "
                        f"--out {d('evaluate')}"]
                     if config.has_ground_truth else ["# no ground truth: nothing to evaluate against"]),
    }
    return commands


# -- the run ---------------------------------------------------------------------------------------

def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(), show_progress: bool = True,
             on_step: Callable[[str, float], None] | None = None) -> dict:
    """Run every step into ``out_dir`` and write ``report.json`` and ``report.html``.

    Args:
        out_dir: the output folder (created; a previous demo's step folders are replaced).
        config: sizes and settings.
        show_progress: progress bars of the long steps.
        on_step: called with each step's name and seconds when it finishes.

    Returns:
        The report (what ``report.json`` holds): ``config``, ``model``, ``steps`` (per step its figures and
        ``seconds``), ``table`` (one row per method), ``commands``, ``seconds_total``.

    Raises:
        DemoStepError: a step failed (the message names it).

    Example:
        >>> report = run_demo("demo_out", DemoConfig.quick())
        >>> [row["method"] for row in report["table"]]
        ['mean shape', 'landmark fit', 'texture fit', 'network']
    """
    from .report_html import write_report_html

    check_export_runtimes(config.export_formats)
    out = Path(out_dir)
    _clear_previous_demo(out)
    write_text_atomic(out / "config.json", json.dumps(asdict(config), indent=2))
    started = time.perf_counter()
    run = DemoRun(out, config, load_morphable_model(config.model).to(config.device), show_progress)
    with torch_threads(config.threads):
        for name, step in STEPS.items():
            run.steps[name] = _run_step(name, step, run)
            if on_step is not None:
                on_step(name, run.steps[name]["seconds"])
    report = {
        "format": "diffface-demo/1",
        "config": asdict(config),
        "model": {"name": run.model.name, "vertices": run.model.num_vertices, "id_dims": run.model.id_dims,
                  "exp_dims": run.model.exp_dims, "tex_dims": run.model.tex_dims,
                  "fingerprint": run.model.fingerprint},
        "ground_truth": config.has_ground_truth,
        "steps": run.steps,
        "table": figures_table(run.steps),
        "commands": reproduce_commands(config, out, run.steps["export"].get("parity_images", [])),
        "seconds_total": round(time.perf_counter() - started, 2),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, default=_plain))
    write_report_html(report, out, out / "report.html")
    return report


def _clear_previous_demo(out: Path) -> None:
    """Create ``out``, or empty the step folders of a previous demo in it (the fit and dataset jobs resume,
    and must not pick up an older run); any other non-empty folder is refused, never cleared."""
    if out.is_dir() and any(out.iterdir()):
        previous = out / "config.json"
        try:
            is_demo = "train_faces" in json.loads(previous.read_text())
        except (OSError, ValueError):
            is_demo = False
        if not is_demo:
            raise ValueError(f"{out}: not empty and not a previous demo's folder; give a new or empty --out")
        for folder in {p.split("/")[0] for p in STEP_OUTPUTS.values()}:
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def check_export_runtimes(formats: tuple[str, ...]) -> None:
    """Fail before the first step, not after minutes of work, when an export format's runtime is missing.

    Raises:
        ImportError: naming the package and its install command.
    """
    from diffface.networks.export import backend_available
    from diffface.networks.export.config import REQUIRES

    for name in formats:
        available, reason = backend_available(REQUIRES[name]) if name in REQUIRES else (True, "")
        if not available:
            raise ImportError(f"the demo's export step writes {name}, but {reason}")


def _run_step(name: str, step: Callable[[DemoRun], dict], run: DemoRun) -> dict:
    """The step's figures with its ``seconds``; any failure becomes a :class:`DemoStepError` naming the step."""
    started = time.perf_counter()
    try:
        figures = step(run)
    except Exception as exc:
        raise DemoStepError(f"demo step '{name}' failed (outputs in {run.out / STEP_OUTPUTS[name]}): "
                            f"{type(exc).__name__}: {exc}") from exc
    return {**figures, "seconds": round(time.perf_counter() - started, 2)}


def figures_table(steps: dict) -> list[dict]:
    """One row per method: evaluation figures (None without ground truth) and the 2D landmark RMS."""
    evaluated = steps.get("evaluate", {}).get("methods", {})
    rms = steps.get("figures", {}).get("landmark_rms_px", {})
    rows = []
    for method in METHODS:
        if method not in evaluated and method not in rms:
            continue
        row = {"method": method, **evaluated.get(method, {})}
        row["landmark_rms_px"] = rms.get(method)
        rows.append(row)
    return rows


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")
