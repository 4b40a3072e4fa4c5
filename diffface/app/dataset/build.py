"""``diffface build-dataset``: turn fitted (or synthetic) faces into training pairs (:mod:`diffface.data.format`).

Per face: an antialiased square crop around its observed landmarks (:mod:`diffface.data.crops`), its
parameters re-expressed in the crop's camera, the ground-truth shape ``S(α_id, α_exp)`` (model space,
mm) and its projection into the crop, the landmarks, automatic quality flags
(:mod:`diffface.app.dataset.quality`) and, for curation, a preview (:mod:`diffface.app.dataset.previews`).

Safe for the data: every file is written atomically and an item's ``.npz`` last, so a killed build
loses at most the batch in flight; ``index.json`` is rewritten after every batch, and a re-run skips
the items already built (keeping their split). Faces that cannot be used (failed fits, unreadable
photos, unreadable result files, non-finite parameters, too few landmarks, photos and landmarks outside
:class:`~diffface.landmarks.InputLimits`) are skipped and listed with the reason in ``DATASET/skipped.json``
and the summary.

Extra files beside the format's::

    DATASET/build.yaml            the resolved BuildConfig
    DATASET/items/<name>.json     the item's index entry (so an index can be rebuilt after a crash)
    DATASET/previews/<name>.png   crop with fitted mesh and landmarks | rendered face
    DATASET/skipped.json          [{"key", "image", "reason"}, ...]
    DATASET/fits/                 the fit job's output, when built from a photo folder

Extra arrays in ``items/<name>.npz``: ``crop_matrix`` (3, 3) photo pixels → crop pixels and
``landmarks_observed`` (68, 2) in crop pixels.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from diffface.atomic_io import atomic_write, write_text_atomic
from diffface.config_io import YamlConfig
from diffface.camera import perspective_project
from diffface.landmarks.crop import CropTransform, boxes_from_landmarks
from diffface.landmarks.images import IMAGE_SUFFIXES, ImageReadError, read_image
from diffface.landmarks.limits import InputLimits, check_face_input
from diffface.morphable_model import MorphableModel, load_morphable_model
from diffface.report_images import to_uint8_image
from diffface.landmark_marching import project_landmarks

from diffface.data.crops import crop_antialiased, params_in_crop
from diffface.data.format import (INFO_NAME, ITEMS_DIR, DatasetInfo, ItemEntry, item_paths, read_info, write_index, write_info,
                     write_item)
from diffface.app.dataset.previews import preview_panel, render_previews
from diffface.app.dataset.quality import QualityConfig, fit_quality
from diffface.app.dataset.sources import FITS_DIR, SourceFace, SourceFaces, read_source

PREVIEWS_DIR = "previews"
SKIPPED_NAME = "skipped.json"
CONFIG_NAME = "build.yaml"
MIN_LANDMARKS = 6
PASSED_FIT_FLAGS = ("diverged", "partial_landmarks")  # fit flags kept on an item (``nonfinite`` skips it)
DIVERGED_SCORE = 2.0  # a fit whose stage 2 diverged sorts among the worst, whatever its other measures
INDEX_REWRITE_SECONDS = 5.0  # how often a build in progress rewrites index.json


@dataclass
class BuildConfig(YamlConfig):
    """Settings of :func:`build_dataset` (YAML: :meth:`from_yaml`; saved as ``DATASET/build.yaml``).

    Attributes:
        crop_size: side of the square crops (96 for the network).
        crop_scale: crop side over the observed landmarks' longer extent.
        val_fraction: share of items in the ``val`` split (chosen by a seeded hash of the names).
        seed: seed of the split.
        previews: render ``previews/<name>.png`` (and the photometric ``texture_residual``).
        preview_size: side of each half of a preview (pixels).
        batch_size: faces processed at once.
        device: ``cpu`` or ``cuda``.
        model: the morphable model to fit a photo folder with (``builtin`` or a file).
        fit_stages: fit-job stages for a photo folder (``landmarks`` or ``landmarks,texture``).
        fit_image_size: the fit job's crop size.
        limits: photos and landmarks refused (skipped with the reason; for a photo folder, also by its fit):
            :class:`~diffface.landmarks.InputLimits`.
        quality: thresholds of the automatic flags.
    """

    crop_size: int = 96
    crop_scale: float = 1.25
    val_fraction: float = 0.1
    seed: int = 0
    previews: bool = True
    preview_size: int = 160
    batch_size: int = 16
    device: str = "cpu"
    model: str = "builtin"
    fit_stages: tuple[str, ...] = ("landmarks",)
    fit_image_size: int = 224
    limits: InputLimits = field(default_factory=InputLimits)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def validate(self) -> "BuildConfig":
        """Raise ``ValueError`` naming the first setting out of range; returns self."""
        checks = {"crop_size": self.crop_size >= 16, "crop_scale": self.crop_scale > 0,
                  "val_fraction": 0 <= self.val_fraction <= 1, "preview_size": self.preview_size >= 16,
                  "batch_size": self.batch_size >= 1, "fit_image_size": self.fit_image_size >= 16}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"build setting {name} is out of range: {getattr(self, name)}")
        self.quality.validate()
        return self

    def to_dict(self) -> dict:
        data = asdict(self)
        data["fit_stages"] = list(self.fit_stages)
        return data


def item_name(key: str) -> str:
    """A file stem for a source key: ``300W/01_Indoor/indoor_001.png`` -> ``300W__01_Indoor__indoor_001``."""
    path = Path(key)
    stem = path.with_suffix("").as_posix() if path.suffix.lower() in IMAGE_SUFFIXES else path.as_posix()
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem.replace("/", "__")).lstrip(".") or "item"


def item_names(keys: list[str]) -> dict[str, str]:
    """Unique item names for source keys (a clash gets ``-2``, ``-3``, ... in key order)."""
    names, used = {}, set()
    for key in keys:
        base = name = item_name(key)
        n = 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        names[key] = name
    return names


def assign_splits(names: list[str], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """``round(val_fraction · N)`` names, chosen by a seeded hash, go to ``val``; the rest to ``train``."""
    ranked = sorted(names, key=lambda n: hashlib.sha1(f"{seed}:{n}".encode()).hexdigest())
    val = set(ranked[:int(round(val_fraction * len(names)))])
    return {n: "val" if n in val else "train" for n in names}


def _resolve_model(faces: SourceFaces, model: MorphableModel | None) -> MorphableModel:
    if model is None:
        model = load_morphable_model(faces.model_spec)
    foreign = [f for f in faces.model_fingerprints if f != model.fingerprint]
    if foreign:
        raise ValueError(f"{faces.root}: its parameters belong to the model with fingerprint {', '.join(foreign)}, "
                         f"but the model given ({model.name}) has fingerprint {model.fingerprint}; "
                         f"build with the model the faces were fitted with ({faces.model_spec!r})")
    return model


def _check_folder(out: Path, source: Path) -> None:
    """Before anything is written: ``out`` must be new, empty, a dataset, or hold only the fits of an earlier run."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output path exists and is not a folder")
    if out.resolve() == source.resolve():
        raise ValueError(f"{out}: the dataset must go to another folder than its source")
    if out.is_dir() and not (out / INFO_NAME).is_file() and any(p.name != FITS_DIR for p in out.iterdir()):
        raise ValueError(f"{out}: output folder is not empty and holds no dataset.json; choose an empty or new folder")


def _check_compatible(out: Path, info: DatasetInfo) -> None:
    """A dataset already in ``out`` must have the same crop size and model (its items are resumed)."""
    if (out / INFO_NAME).is_file():
        old = read_info(out)
        differ = [k for k in ("crop_size", "model_fingerprint", "param_names") if getattr(old, k) != getattr(info, k)]
        if differ:
            raise ValueError(f"{out} holds a dataset built with other settings ({', '.join(differ)} differ); "
                             "use a new --out")


def _read_done(out: Path, name: str) -> ItemEntry | None:
    """The entry of an item a previous run finished (its ``.npz`` exists), else None."""
    meta = Path(out) / ITEMS_DIR / f"{name}.json"
    if not item_paths(out, name)[1].is_file() or not meta.is_file():
        return None
    try:
        return ItemEntry(**json.loads(meta.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return None


@dataclass
class _Prepared:
    name: str
    face: SourceFace
    crop: torch.Tensor  # (3, S, S)
    matrix: torch.Tensor  # (3, 3) float64
    params: torch.Tensor  # (P,) float32, photo frame


def _prepare(face: SourceFace, name: str, model: MorphableModel, config: BuildConfig) -> _Prepared:
    """Read and crop one face; raises ValueError with the reason it cannot be used."""
    layout = model.layout
    params = np.asarray(face.params, dtype=np.float32)
    if params.shape[0] > layout.network_size and not np.isfinite(params[layout.network_size:]).all():
        params = params[:layout.network_size]  # a stage-1 row padded with NaN next to stage-2 rows
    if params.shape[0] not in (layout.network_size, layout.full_size):
        raise ValueError(f"{len(params)} parameters, expected {layout.network_size} or {layout.full_size} "
                         f"for model {model.name}")
    if "nonfinite" in face.fit_flags or not np.isfinite(params).all():
        raise ValueError("the fit's parameters are not finite")
    observed = torch.as_tensor(np.asarray(face.landmarks_observed, dtype=np.float64))
    around = observed
    if int(torch.isfinite(observed).all(-1).sum()) < MIN_LANDMARKS:
        if face.landmarks_fitted is None:
            raise ValueError(f"fewer than {MIN_LANDMARKS} finite landmarks to crop around")
        around = torch.as_tensor(np.asarray(face.landmarks_fitted, dtype=np.float64))
    image = read_image(face.image, config.limits.max_image_pixels)
    check_face_input(image.shape[:2], around.numpy(), face.image, config.limits)
    pixels = torch.from_numpy(image).permute(2, 0, 1).to(config.device, torch.float32) / 255
    box = boxes_from_landmarks(around[None], config.crop_scale)[0]
    crop, transform = crop_antialiased(pixels, box, config.crop_size)
    return _Prepared(name, face, crop, transform.matrix[0], torch.from_numpy(params))


def _process(batch: list[_Prepared], model: MorphableModel, splits: dict, out: Path, config: BuildConfig) -> list:
    """Build, judge and write one batch of prepared faces; returns their index entries."""
    device = torch.device(config.device)
    layout = model.layout
    full = all(len(p.params) == layout.full_size for p in batch)
    packed = torch.stack([p.params if full else p.params[:layout.network_size] for p in batch]).to(device)
    original = layout.unpack(packed)
    transform = CropTransform(torch.stack([p.matrix for p in batch]).to(device), config.crop_size)
    # stored in float32, so everything below is computed from the float32-rounded crop camera
    crop_params = params_in_crop(original.map(torch.Tensor.double), transform).map(lambda t: t.float())
    crops = torch.stack([p.crop for p in batch])
    with torch.no_grad():
        vertices = model.shape(crop_params.alpha_id, crop_params.alpha_exp)
        projections, _ = perspective_project(vertices.double(), crop_params.angles.double(),
                                             crop_params.translation.double(), crop_params.focal.double(),
                                             crop_params.principal_point.double())
        computed_landmarks = project_landmarks(model, crop_params.map(torch.Tensor.double), vertices.double())[0]
    def photo_landmarks(rows: list) -> torch.Tensor:
        nan = np.full((68, 2), np.nan)
        return torch.from_numpy(np.stack([nan if r is None else np.asarray(r, dtype=np.float64) for r in rows]))

    observed = transform.apply_points(photo_landmarks([p.face.landmarks_observed for p in batch]).to(device))
    given = torch.tensor([p.face.landmarks_fitted is not None for p in batch], device=device)
    fitted = torch.where(given[:, None, None],
                         transform.apply_points(photo_landmarks([p.face.landmarks_fitted for p in batch]).to(device)),
                         computed_landmarks)
    rendering = render_previews(model, crop_params, crops, config.preview_size) if config.previews else None
    residual = rendering.texture_residual if rendering is not None else None
    qualities, flags = fit_quality(fitted, observed, crop_params.alpha_id, crop_params.alpha_exp, crop_params.angles,
                                   model.id_std, model.exp_std, config.crop_size, residual, config.quality)
    entries = []
    for k, prepared in enumerate(batch):
        name, face = prepared.name, prepared.face
        quality = dict(qualities[k])
        if "texture/texture" in face.energies and np.isfinite(face.energies["texture/texture"]):
            quality["texture_energy"] = float(face.energies["texture/texture"])
        if "diverged" in face.fit_flags:
            quality["score"] = max(quality["score"], DIVERGED_SCORE)
        entry = ItemEntry(name=name, split=splits[name], source=str(face.image), quality=quality,
                          flags=flags[k] + [f for f in PASSED_FIT_FLAGS if f in face.fit_flags])
        crop_uint8 = to_uint8_image(prepared.crop)
        if rendering is not None:
            panel = preview_panel(crop_uint8, rendering, k, observed[k].cpu().numpy(), fitted[k].cpu().numpy())
            with atomic_write(out / PREVIEWS_DIR / f"{name}.png") as handle:
                panel.save(handle, format="PNG")
        write_text_atomic(out / ITEMS_DIR / f"{name}.json", json.dumps(asdict(entry)))
        arrays = {"params": layout.pack(crop_params.index(slice(k, k + 1)))[0].cpu().numpy(),
                  "vertices": vertices[k].cpu().numpy(), "projections": projections[k].cpu().numpy(),
                  "landmarks": fitted[k].cpu().numpy(), "landmarks_observed": observed[k].cpu().numpy(),
                  "crop_matrix": prepared.matrix.cpu().numpy()}
        if full:
            arrays["params_full"] = layout.pack(crop_params.index(slice(k, k + 1)), include_fitting=True)[0].cpu().numpy()
        write_item(out, name, crop_uint8, arrays)  # the .npz last: its presence marks the item complete
        entries.append(entry)
    return entries


def build_dataset(source: str | Path, out: str | Path, config: BuildConfig = BuildConfig(),
                  model: MorphableModel | None = None, progress: Callable[[int], None] | None = None) -> dict:
    """Build (or resume building) a training dataset from fits, a synthetic benchmark or a photo folder.

    Args:
        source: a fit-job folder, a ``diffface synth`` folder, or folders of photos with ``.pts`` landmarks
            (fitted into ``out/fits`` first).
        out: the dataset folder: new, empty, or a dataset built with the same crop size and model (resumed).
        config: crop, split, preview and flag settings.
        model: the morphable model, if already loaded (else the one the source names); its fingerprint
            must match the source's.
        progress: called with the number of faces finished after each batch.

    Returns:
        A summary: ``items``, ``built``, ``resumed``, ``skipped`` counts, ``skipped_items`` (key, image,
        reason), ``train``/``val`` counts, ``flagged`` counts per flag, ``seconds``, ``items_per_s``,
        ``left_out`` (``{suffix: count}`` of a photo folder's files that are not images).

    Example:
        >>> summary = build_dataset("synth_out", "dataset", BuildConfig(crop_size=96))
        >>> FaceDataset("dataset", split="train")[0]["image"].shape
        torch.Size([3, 96, 96])
    """
    config.validate()
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    _check_folder(out, source)
    faces = read_source(source, out, config.model, config.fit_stages, config.fit_image_size, config.device,
                        limits=config.limits)
    model = _resolve_model(faces, model).to(config.device)
    layout = model.layout
    info = DatasetInfo(crop_size=config.crop_size, model_name=model.name, model_fingerprint=model.fingerprint,
                       id_dims=layout.id_dims, exp_dims=layout.exp_dims, tex_dims=layout.tex_dims,
                       param_names=layout.names(), num_vertices=model.num_vertices, source=str(source))
    _check_compatible(out, info)
    out.mkdir(parents=True, exist_ok=True)
    write_info(out, info)
    write_text_atomic(out / CONFIG_NAME, yaml.safe_dump(config.to_dict(), sort_keys=False))

    names = item_names([f.key for f in faces.faces])
    splits = assign_splits(list(names.values()), config.val_fraction, config.seed)
    entries: dict[str, ItemEntry] = {}
    skipped = [dict(record) for record in faces.failed]
    todo = []
    for face in faces.faces:
        done = _read_done(out, names[face.key])
        if done is not None:
            entries[done.name] = done
        else:
            todo.append(face)
    resumed = len(entries)
    if progress is not None and resumed:
        progress(resumed)

    def write_current_index():
        order = {n: i for i, n in enumerate(names.values())}
        write_index(out, sorted(entries.values(), key=lambda e: order[e.name]))

    # the index is rewritten as items finish, for a curation page open on a dataset still being built; at most
    # every INDEX_REWRITE_SECONDS, since each rewrite serialises every entry so far (quadratic in the items)
    # (a killed build leaves its finished items: a re-run reads them back; an interrupted one also its index)
    index_written = time.perf_counter()
    try:
        for start in range(0, len(todo), config.batch_size):
            batch = []
            for face in todo[start:start + config.batch_size]:
                try:
                    batch.append(_prepare(face, names[face.key], model, config))
                except (ValueError, ImageReadError, FileNotFoundError) as exc:
                    skipped.append({"key": face.key, "image": str(face.image), "reason": str(exc)})
            for entry in _process(batch, model, splits, out, config) if batch else []:
                entries[entry.name] = entry
            if time.perf_counter() - index_written > INDEX_REWRITE_SECONDS:
                write_current_index()
                index_written = time.perf_counter()
            if progress is not None:
                progress(len(todo[start:start + config.batch_size]))
    finally:
        write_current_index()
    write_text_atomic(out / SKIPPED_NAME, json.dumps(skipped, indent=1))

    seconds = time.perf_counter() - started
    built = len(entries) - resumed
    flagged: dict[str, int] = {}
    for entry in entries.values():
        for flag in entry.flags:
            flagged[flag] = flagged.get(flag, 0) + 1
    return {
        "source": str(source), "source_kind": faces.kind, "out": str(out),
        "items": len(entries), "built": built, "resumed": resumed, "skipped": len(skipped),
        "train": sum(e.split == "train" for e in entries.values()),
        "val": sum(e.split == "val" for e in entries.values()),
        "flagged": flagged, "crop_size": config.crop_size, "model": model.name,
        "seconds": round(seconds, 3), "items_per_s": round(built / seconds, 2) if built and seconds > 0 else None,
        "left_out": faces.left_out, "skipped_items": skipped,
    }
