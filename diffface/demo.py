"""``diffface demo``: the whole pipeline, end to end, offline, in a few minutes on a CPU; a script of the
``diffface`` commands a user would type, run in this process (:mod:`diffface.cli.invoke`), so that the
report's "reproduce" lines are exactly what ran.

Steps, each writing into its own subfolder of ``DIR`` (a failing step raises :class:`DemoStepError`
naming it)::

    inputs/     synthetic photos with ground truth (``diffface synth``): a training set and a held-out
                set; or, with ``images=``, the user's photos split into train/ and heldout/ (hard links)
    landmarks/  68 landmarks per photo as .pts (``diffface landmarks``: read from the synthetic .pts
                files, or detected with dlib / FAN on real photos)
    fits/       train/ stage 1 (landmarks); heldout_landmarks/ stage 1 and heldout_texture/ stage 1 + 2
                (texture), with meshes (``diffface fit``)
    dataset/    training pairs from the training fits (``diffface build-dataset``), automatically curated:
                the items whose automatic quality flags are raised are rejected (``diffface curate --auto``)
    train/      the regressor (MobileFace, 96 px), fine-tuned from the shipped network where there is one for
                the model, else trained anew (``diffface train``)
    export/     TorchScript and ONNX files with their parity against eager PyTorch (``diffface export``)
    predict/    the network's parameters and meshes on the held-out photos (``diffface predict``)
    evaluate/   mean shape, landmark fit, texture fit and network against the ground-truth meshes:
                AUC, median d, mm errors, CED (``diffface baselines``, ``diffface evaluate``)
    figures/    held-out photos with landmarks, rendered fits and network predictions

and ``DIR/report.json``, ``DIR/report.html`` (self-contained, :mod:`diffface.app.report_html`) and
``DIR/config.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from .app.demo_config import METHODS, DemoConfig, DemoRun, DemoStepError
from .app.demo_figures import step_figures
from .app.demo_run import check_export_runtimes, clear_previous_demo, figures_table, run_step, write_report
from .app.user_photos import split_user_images
from .atomic_io import write_text_atomic

from .cli.invoke import command_line, run_command, shell_line
from .landmarks import list_images
from .morphable_model import load_morphable_model
from .networks.export.config import SUFFIXES
from .networks.pretrained import find_pretrained, provenance
from .threads import torch_threads

__all__ = ["DemoConfig", "DemoStepError", "METHODS", "STEPS", "run_demo"]

SETS = ("train", "heldout")
FIT_JOBS = {  # fit folder -> (photo set, stages, meshes)
    "train": ("train", ("landmarks",), "none"),
    "heldout_landmarks": ("heldout", ("landmarks",), "obj"),
    "heldout_texture": ("heldout", ("landmarks", "texture"), "obj"),
}


def cli(r: DemoRun, step: str, command: str, *positional, **options) -> dict:
    """Run ``diffface COMMAND ...`` for ``step`` and record its shell line; returns its ``--json`` figures."""
    argv = command_line(command, *positional, **options)
    r.commands.setdefault(step, []).append(shell_line(argv))
    return run_command(argv)


def note(r: DemoRun, step: str, text: str) -> None:
    """Record, among ``step``'s commands, work the demo does in Python (a ``#`` line)."""
    r.commands.setdefault(step, []).append(f"# {text}")


# -- the steps -------------------------------------------------------------------------------------


def step_inputs(r: DemoRun) -> dict:
    """Synthetic train and held-out photos with ground truth, or the user's photos split in two."""
    c = r.config
    if not c.has_ground_truth:
        note(r, "inputs", f"the last {c.heldout_faces} photos of {c.images} (sorted) are held out: "
                          f"{r.path('inputs', 'heldout', 'images')}; the others: {r.path('inputs', 'train', 'images')}")
        return split_user_images(Path(c.images), r.path("inputs"), c.heldout_faces)
    return {name: cli(r, "inputs", "synth", out=r.path("inputs", name), n=count, seed=c.seed + offset,
                      image_size=c.image_size, model=c.model, device=c.device,
                      subdivision_levels=c.subdivision_levels, batch_size=16)
            for offset, (name, count) in enumerate((("train", c.train_faces), ("heldout", c.heldout_faces)))}


def step_landmarks(r: DemoRun) -> dict:
    """68 landmarks of every photo as ``landmarks/<set>/NAME.pts``; photos where no face is found are
    moved aside to ``inputs/<set>/no_face/`` so that the later steps see only usable ones."""
    figures = {}
    for name in SETS:
        figures[name] = cli(r, "landmarks", "landmarks", r.path("inputs", name, "images"),
                            detector=r.config.landmarks, out=r.path("landmarks", name))
        failures = json.loads(Path(figures[name]["report"]).read_text())["failures"]
        if failures:
            note(r, "landmarks", f"photos without a face moved to {r.path('inputs', name, 'no_face')}")
        for failure in failures:
            r.path("inputs", name, "no_face").mkdir(exist_ok=True)
            Path(failure["image"]).rename(r.path("inputs", name, "no_face", Path(failure["image"]).name))
    return figures


def step_fit(r: DemoRun) -> dict:
    """Stage 1 on every photo; stage 1 + 2 on the held-out ones."""
    c, figures = r.config, {}
    for name, (photos, stages, meshes) in FIT_JOBS.items():
        if "texture" in stages and c.texture_rounds == 0:
            continue
        settings = [f"image_size={c.fit_image_size}", f"landmarks.rounds={c.fit_rounds}"]
        if "texture" in stages:
            settings += [f"texture.rounds={c.texture_rounds}", f"texture.norm={c.texture_norm}"]
        figures[name] = cli(r, "fit", "fit", r.path("inputs", photos, "images"), out=r.path("fits", name),
                            landmarks="pts", annotations=r.path("landmarks", photos), stages=",".join(stages),
                            model=c.model, device=c.device, meshes=meshes, workers=0, no_tensorboard=True,
                            overrides=settings)
        figures[name]["flags"] = json.loads(r.path("fits", name, "summary.json").read_text())["flags"]
    return figures


def step_dataset(r: DemoRun) -> dict:
    """Training pairs (96 px crops, parameters in the crop camera, ground truth) from the training fits."""
    c = r.config
    return cli(r, "dataset", "build-dataset", r.path("fits", "train"), out=r.path("dataset"), crop_size=96,
               val_fraction=c.val_fraction, seed=c.seed, no_previews=True, model=c.model, device=c.device,
               overrides=[f"quality.max_landmark_rms={c.max_landmark_rms}"])


def step_curate(r: DemoRun) -> dict:
    """Reject the flagged items (and the worst-scoring share the config asks for)."""
    figures = cli(r, "curate", "curate", r.path("dataset"), auto=True, worst_fraction=r.config.curate_worst_fraction)
    note(r, "curate", f"or review the fits in the browser: diffface curate {r.path('dataset')}")
    return figures


def step_train(r: DemoRun) -> dict:
    """A brief training run of MobileFace on the curated dataset, from the shipped network where one fits."""
    c = r.config
    init = initial_checkpoint(c, r.model.fingerprint)
    steps = c.train_steps
    figures = cli(r, "train", "train", r.path("dataset"), out=r.path("train"), steps=steps, batch_size=c.batch_size,
                  lr=c.lr, width=c.width, workers=0, seed=c.seed, device=c.device, init=init,
                  overrides=[f"lr_final={c.lr / 10:g}", f"augment={str(c.augment).lower()}", f"val_every={steps}",
                             f"checkpoint_every={steps}", f"log_every={max(1, steps // 10)}", "tensorboard=false"])
    made_by = provenance(init).get("command") if init else None
    return {**figures, "init": str(init) if init else "new network", **({"init_made_by": made_by} if made_by else {})}


def initial_checkpoint(config: DemoConfig, model_fingerprint: str) -> Path | None:
    """The checkpoint training starts from (``config.init``), None for a new network."""
    if config.init == "none":
        return None
    if config.init == "auto":
        return find_pretrained(model_fingerprint, width=config.width)
    if not Path(config.init).is_file():
        raise FileNotFoundError(f"demo setting init: {config.init}: no such checkpoint file")
    return Path(config.init)


def step_export(r: DemoRun) -> dict:
    """The trained network as TorchScript and ONNX files, each checked against eager PyTorch."""
    # the parity check crops real photos around the .pts annotations beside them (random crops besides)
    real = [p for p in list_images(r.path("inputs", "heldout", "images")) if p.with_suffix(".pts").is_file()][:4]
    formats = {}
    for name in r.config.export_formats:
        result = cli(r, "export", "export", r.path("train", "model.pt"), format=name,
                     out=r.path("export", f"model{SUFFIXES[name]}"), image=real)
        formats[name] = {"file": Path(result["path"]).name, "size_mb": result["size_mb"],
                         "parity_max_abs_error": result["parity"]["max_abs_error"],
                         "parity_passed": result["parity"]["passed"]}
    return {"formats": formats, "parity_images": [p.name for p in real]}


def step_predict(r: DemoRun) -> dict:
    """The network's parameters and meshes for the held-out photos."""
    return cli(r, "predict", "predict", r.path("train", "model.pt"), r.path("inputs", "heldout", "images"),
               out=r.path("predict"), landmarks="pts", annotations=r.path("landmarks", "heldout"), meshes="obj")


def step_evaluate(r: DemoRun) -> dict:
    """Every method's meshes against the ground truth (ICP-aligned): AUC, median d, mm errors and the CED."""
    if not r.config.has_ground_truth:
        note(r, "evaluate", "no ground truth: nothing to evaluate against")
        return {"ground_truth": False}
    gt = r.path("inputs", "heldout", "meshes")
    cli(r, "evaluate", "baselines", gt=gt, out=r.path("evaluate"), meanshape=True, model=r.config.model)
    landmarks = "builtin" if r.config.model == "builtin" else r.path("evaluate", "landmark_indices.npy")
    if landmarks != "builtin":
        note(r, "evaluate", f"{landmarks}: the model's 68 landmark vertex indices (numpy.save)")
        np.save(landmarks, r.model.landmark_indices.cpu().numpy().astype(np.int64))
    compare = [f"{name.replace(' ', '-')}={r.path(folder)}" for name, folder in METHODS.items()
               if r.path(folder).is_dir()]
    # a face a method failed on counts as its failure in the report, not as an error of the demo
    cli(r, "evaluate", "evaluate", compare=compare, gt=gt, landmarks=landmarks, out=r.path("evaluate"),
        allow_missing=True)
    report = json.loads(r.path("evaluate", "report.json").read_text())
    return {"ground_truth": True, "methods": {
        name.replace("-", " "): {k: m[k] for k in ("n", "n_failed", "auc", "median", "mean_mm", "median_mm")}
        for name, m in report["methods"].items()}}


STEPS: dict[str, Callable[[DemoRun], dict]] = {
    "inputs": step_inputs, "landmarks": step_landmarks, "fit": step_fit, "dataset": step_dataset,
    "curate": step_curate, "train": step_train, "export": step_export, "predict": step_predict,
    "evaluate": step_evaluate, "figures": step_figures,
}
STEP_OUTPUTS = {"inputs": "inputs", "landmarks": "landmarks", "fit": "fits", "dataset": "dataset",
                "curate": "dataset/curation.jsonl", "train": "train/model.pt", "export": "export",
                "predict": "predict", "evaluate": "evaluate", "figures": "figures"}


# -- the run ---------------------------------------------------------------------------------------


def run_demo(out_dir: str | Path, config: DemoConfig = DemoConfig(),
             on_step: Callable[[str, float], None] | None = None) -> dict:
    """Run every step into ``out_dir`` and write ``report.json`` and ``report.html``.

    Args:
        out_dir: the output folder (created; a previous demo's step folders are replaced).
        config: sizes and settings.
        on_step: called with each step's name and seconds when it finishes.

    Returns:
        The report (what ``report.json`` holds): ``config``, ``model``, ``steps`` (per step its figures and
        ``seconds``), ``table`` (one row per method), ``commands`` (per step the command lines it ran),
        ``seconds_total``.

    Raises:
        DemoStepError: a step failed (the message names it).

    Example:
        >>> report = run_demo("demo_out", DemoConfig.quick())
        >>> [row["method"] for row in report["table"]]
        ['mean shape', 'landmark fit', 'texture fit', 'network']
    """
    check_export_runtimes(config.export_formats)
    out = Path(out_dir)
    clear_previous_demo(out, {p.split("/")[0] for p in STEP_OUTPUTS.values()})
    write_text_atomic(out / "config.json", json.dumps(asdict(config), indent=2))
    started = time.perf_counter()
    r = DemoRun(out, config, load_morphable_model(config.model).to(config.device))
    with torch_threads(config.threads):
        for name, step in STEPS.items():
            r.steps[name] = run_step(name, step, r, STEP_OUTPUTS[name])
            if on_step is not None:
                on_step(name, r.steps[name]["seconds"])
    report = {
        "format": "diffface-demo/1",
        "config": asdict(config),
        "model": {"name": r.model.name, "vertices": r.model.num_vertices, "id_dims": r.model.id_dims,
                  "exp_dims": r.model.exp_dims, "tex_dims": r.model.tex_dims, "fingerprint": r.model.fingerprint},
        "ground_truth": config.has_ground_truth,
        "steps": r.steps,
        "table": figures_table(r.steps),
        "commands": r.commands,
        "seconds_total": round(time.perf_counter() - started, 2),
    }
    write_report(out, report)
    return report
