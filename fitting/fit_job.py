"""Batched fitting of a folder (or list file) of photos: resumable, sharded over ranks, written as it goes.

:func:`run_fit_job` reads and landmarks images in DataLoader workers while the device fits batches
(stage 1, landmarks; optionally stage 2, texture), and writes each image's result atomically as soon
as its batch is done. :func:`read_fit_results` merges every rank's results into one table.

Frames. Every image is fitted in a square crop of ``image_size`` pixels around its landmarks
(:func:`diffface.landmarks.boxes_from_landmarks`, scale ``crop_scale``), so all images of a batch
share one size and the stage weights act as at the method's 224 px. The stored parameters are
mapped back to the **original image**: the crop is ``u' = s·u + t``, so the stored camera is
``f = f_crop / s``, ``(Px, Py) = (P_crop − t) / s``; pose, shape, albedo and lighting are unchanged.
Projecting the stored parameters onto the original image gives the stored fitted landmarks. The
crop matrix is stored too (``crop_matrix``) to go back to the crop frame.

On-disk layout (``DIR``)::

    DIR/config.yaml              the resolved FitJobConfig (a re-run must agree on the fit settings)
    DIR/results/<key>.npz        one per fitted image (<key>: the image's path relative to INPUT's
                                 folder, e.g. ``sub/photo.jpg``; images outside it: ``_outside/<hash>_<name>``)
    DIR/results/<key>.failed.json  one per bad image: {"image", "key", "reason", "error", "rank"}
    DIR/meshes/<key>.obj|.ply    the fitted shape, model space (mm), on request (``save_meshes``);
                                 ``.ply`` carries the fitted albedo as vertex colours after stage 2
    DIR/log_rank<r>.jsonl        one line per image processed by rank r (ok or failed), in order
    DIR/summary.json             counts, mean energies, flags and failures of all ranks (rank 0, at the end)
    DIR/tensorboard/             energies per term and stage, images/s, overlays (rank 0)

Each ``results/<key>.npz`` (``numpy.load``, no pickles) holds:

=====================  ===========  =====================================================================
key                    dtype/shape  meaning
=====================  ===========  =====================================================================
``format``             str          ``"diffface-fit/1"``
``image``              str          the image path as listed
``key``                str          the result's key (see above)
``image_size``         int64 (2,)   ``(H, W)`` of the original image
``stages``             str (S,)     the stages run, e.g. ``["landmarks", "texture"]``
``params``             float32 (P,) the packed parameter vector (``model.layout.pack``; with stage 2 the
                                    fitting part ``β``, SH too, ``include_fitting=True``), original image frame
``param_names``        str (P,)     ``model.layout.names(...)``, one per entry of ``params``
``landmarks``          float32      (68, 2) fitted 2D landmarks (contours marched), original image pixels
``landmarks_observed`` float32      (68, 2) the landmarks fitted to (NaN rows: missing)
``energy_names``       str (T,)     ``<stage>/<term>``: ``landmarks/{total,landmarks,id_prior,exp_prior}``,
                                    ``texture/{total,texture,landmarks,albedo_prior,exp_prior}``
``energy_values``      float64 (T,) the final energy of each term, as the stage's fit function returns it
``flag_names``         str (G,)     ``diverged`` (stage 2 reset a non-finite sample), ``nonfinite`` (an
                                    energy or parameter is not finite), ``partial_landmarks`` (NaN rows)
``flag_values``        bool (G,)
``crop_matrix``        float64      (3, 3) source pixels → fitting-crop pixels (``CropTransform.matrix``)
``crop_size``          int64 ()     side of the fitting crop
``model_name``         str          the morphable model's name
``model_fingerprint``  str          ``model.fingerprint`` (which model the parameters belong to)
=====================  ===========  =====================================================================

Resume and crashes: a result file is written to a temporary name and renamed, so a result either
exists whole or not at all; a job killed (even by SIGKILL) loses at most the batch in flight. A re-run
skips images with a result (or a ``.failed.json``, unless ``retry_failed``) and removes stale
temporary files.

Sharding: with ``WORLD_SIZE > 1`` (``torchrun --nproc_per_node=N diffface fit ...``) rank ``r`` takes
the images ``i`` with ``i % WORLD_SIZE == r`` of the listed input, writes its own log and its own
result files (distinct names) into the shared ``results/``; ``torch.distributed`` (gloo, which
carries only the end barrier and the run statistics) is started only then. On several machines
without a shared disk, copy the ``results/`` folders together: file names never collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from diffface.landmarks import (DETECTORS, ImageReadError, NoFaceError, boxes_from_landmarks, crop_faces,
                                crop_transform, list_images, make_detector, read_image, square_boxes)
from diffface.landmarks.images import IMAGE_SUFFIXES
from diffface.morphable_model import MorphableModel, load_morphable_model
from diffface.params import FaceParameters

from .landmark_fitting import LandmarkFitConfig, fit_landmarks
from .texture_fitting import TextureFitConfig, fit_texture

RESULT_FORMAT = "diffface-fit/1"
STAGES = ("landmarks", "texture")
MESH_FORMATS = ("none", "obj", "ply")
RESULTS_DIR = "results"
CONFIG_NAME = "config.yaml"
SUMMARY_NAME = "summary.json"
FAILED_SUFFIX = ".failed.json"
MIN_LANDMARKS = 6  # fewer finite landmarks than this cannot pin down a pose

# settings that change what a result holds: a re-run into the same DIR must agree on them
FIT_SETTINGS = ("model", "detector", "detector_options", "stages", "image_size", "crop_scale", "landmarks_float64",
                "landmarks", "texture")


@dataclass
class FitJobConfig:
    """Settings of :func:`run_fit_job`; every weight lives here (YAML: :meth:`from_yaml`, CLI: ``--set a.b=v``).

    Attributes:
        model: ``"builtin"`` or a morphable-model file.
        detector: landmark source, ``pts`` (annotation files beside the images), ``dlib``, ``fan`` or ``auto``.
        detector_options: passed to :func:`diffface.landmarks.make_detector` (e.g. ``annotation_dir``,
            ``weights``, ``device``, ``predictor_path``).
        stages: ``["landmarks"]`` or ``["landmarks", "texture"]``.
        batch_size: images per batch.
        num_workers: DataLoader worker processes reading and landmarking images (0: in the main process).
        image_size: side of the square crop (pixels) both stages fit in.
        crop_scale: crop side over the landmarks' larger extent.
        device: ``cpu``, ``cuda`` (rank r of a multi-process job uses ``cuda:LOCAL_RANK``) or ``cuda:N``.
        save_meshes: ``none``, ``obj`` or ``ply``.
        tensorboard: log energies, images/s and overlays under ``DIR/tensorboard`` (rank 0).
        overlay_samples: images per overlay grid; overlay_every: batches between grids.
        retry_failed: re-try images recorded as failed by an earlier run.
        progress: show a progress bar (rank 0).
        landmarks_float64: run stage 1 in float64 (each image's fit then does not depend on its batch mates).
        landmarks: stage-1 settings (:class:`~diffface.fitting.LandmarkFitConfig`).
        texture: stage-2 settings (:class:`~diffface.fitting.texture_fitting.TextureFitConfig`).
    """

    model: str = "builtin"
    detector: str = "pts"
    detector_options: dict = field(default_factory=dict)
    stages: tuple[str, ...] = ("landmarks",)
    batch_size: int = 32
    num_workers: int = 2
    image_size: int = 224
    crop_scale: float = 1.25
    device: str = "cpu"
    save_meshes: str = "none"
    tensorboard: bool = True
    overlay_samples: int = 4
    overlay_every: int = 50
    retry_failed: bool = False
    progress: bool = True
    landmarks_float64: bool = True
    landmarks: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    texture: TextureFitConfig = field(default_factory=TextureFitConfig)

    def __post_init__(self):
        self.stages = tuple(self.stages)
        if self.stages not in (("landmarks",), ("landmarks", "texture")):
            raise ValueError(f"stages must be 'landmarks' or 'landmarks,texture' (stage 2 starts from stage 1), "
                             f"got {','.join(self.stages)!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown landmark source {self.detector!r}; choose one of {DETECTORS}")
        if self.save_meshes not in MESH_FORMATS:
            raise ValueError(f"save_meshes must be one of {MESH_FORMATS}, got {self.save_meshes!r}")
        for name, low in (("batch_size", 1), ("num_workers", 0), ("image_size", 16), ("overlay_samples", 0),
                          ("overlay_every", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not self.crop_scale > 0:
            raise ValueError(f"crop_scale must be positive, got {self.crop_scale}")

    # -- YAML and dotted overrides ------------------------------------------------------------
    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML; written (atomically) to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            _write_text_atomic(Path(path), text)
        return text

    @classmethod
    def from_dict(cls, mapping: dict, base: "FitJobConfig | None" = None) -> "FitJobConfig":
        """``base`` (default: the defaults) updated from a nested mapping; unknown keys raise ``ValueError``."""
        return _update(base if base is not None else cls(), mapping, "")

    @classmethod
    def from_yaml(cls, path: str | Path, base: "FitJobConfig | None" = None) -> "FitJobConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            mapping = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(mapping, dict):
            raise ValueError(f"{path}: a config file must hold a mapping, got {type(mapping).__name__}")
        try:
            return cls.from_dict(mapping, base)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def with_overrides(self, overrides: Sequence[str]) -> "FitJobConfig":
        """Apply ``key=value`` items with dotted keys (``texture.norm=l1``, ``landmarks.rounds=3``,
        ``stages=landmarks,texture``); values are parsed as YAML scalars or lists."""
        config = self
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set {item!r}: expected key=value (e.g. texture.norm=l1)")
            value = yaml.safe_load(text) if text.strip() else ""
            nested: Any = value
            for part in reversed(key.strip().split(".")):
                nested = {part: nested}
            config = _update(config, nested, "")
        return config


def _plain(value):
    """Tuples to lists, paths to strings, recursively (for YAML and JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _coerce(value, current, key: str):
    """``value`` as the type of the field's current value, or a ``ValueError`` naming the key."""
    if current is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(current, str):
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if isinstance(current, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return tuple(value)
    if isinstance(current, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return {**current, **value}
    return value


def _update(obj, mapping: dict, prefix: str):
    """A copy of dataclass ``obj`` with the fields in ``mapping`` set (nested dataclasses recursively)."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {mapping!r}")
    names = [f.name for f in fields(obj)]
    changes = {}
    for key, value in mapping.items():
        if key not in names:
            raise ValueError(f"unknown config key {prefix + str(key)!r}; {prefix.rstrip('.') or 'the config'} "
                             f"has {', '.join(names)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            changes[key] = _update(current, value, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, current, prefix + key)
    try:
        return replace(obj, **changes)
    except TypeError as exc:
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: {exc}") from exc


def _fit_settings(config_dict: dict) -> dict:
    return {k: config_dict.get(k) for k in FIT_SETTINGS}


# -- inputs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitInput:
    """One listed image: its path and the key its result files are named by."""

    path: Path
    key: str


def _key_for(path: Path, root: Path) -> str:
    try:
        relative = path.resolve().relative_to(root.resolve())
        return relative.as_posix()
    except ValueError:
        digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        return f"_outside/{digest}_{path.name}"


def list_fit_inputs(source: str | Path) -> list[FitInput]:
    """The images of a folder (sorted, not recursive) or of a list file (one path a line, relative to
    the list file's folder; blank lines and ``#`` comments ignored; duplicates dropped).

    Raises:
        FileNotFoundError: naming ``source`` if it does not exist. ValueError: it lists no image.
    """
    source = Path(source)
    if source.is_dir():
        root, paths = source, list_images(source)
    elif source.is_file():
        if source.suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"{source}: give a folder of images or a text file listing them, not one image")
        root = source.parent
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source}: not a text list of image paths ({exc})") from exc
        paths = [root / line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    else:
        raise FileNotFoundError(f"{source}: no such folder or list file")
    items, seen = [], set()
    for path in paths:
        key = _key_for(path, root)
        if key not in seen:
            seen.add(key)
            items.append(FitInput(path=path, key=key))
    if not items:
        raise ValueError(f"{source}: no images (.png, .jpg, ...) listed")
    return items


class FitImageDataset(Dataset):
    """Reads an image and its landmarks (and, for stage 2, its fitting crop) per item, in DataLoader workers.

    Never raises for a bad image: the item is ``{"status": "failed", "reason": ..., "error": ...}``.
    The detector is built lazily in each worker process.

    Item (``status == "ok"``): ``index``, ``image``, ``key``, ``image_size`` (H, W), ``landmarks``
    (68, 2) float64 original pixels, ``crop_matrix`` (3, 3) float64, ``crop`` (3, S, S) float32 in
    [0, 1] or None.
    """

    def __init__(self, items: Sequence[FitInput], detector: str, detector_options: dict, crop_size: int,
                 crop_scale: float, with_crops: bool, indices: Sequence[int] | None = None):
        self.items = list(items)
        self.indices = list(indices) if indices is not None else list(range(len(self.items)))
        self.detector_name, self.detector_options = detector, dict(detector_options)
        self.crop_size, self.crop_scale, self.with_crops = crop_size, crop_scale, with_crops
        self._detector = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        record = {"index": self.indices[i], "image": str(item.path), "key": item.key}
        try:
            record.update(self._load(item))
            record["status"] = "ok"
        except (ImageReadError, NoFaceError, FileNotFoundError, ValueError) as exc:
            record.update(status="failed", reason=str(exc), error=type(exc).__name__)
        return record

    def _load(self, item: FitInput) -> dict:
        if self._detector is None:
            self._detector = make_detector(self.detector_name, **self.detector_options)
        image = read_image(item.path)
        landmarks = self._detector.detect_one(image, item.path).landmarks
        finite = np.isfinite(landmarks).all(1)
        if finite.sum() < MIN_LANDMARKS:
            raise ValueError(f"{item.path}: only {int(finite.sum())} of 68 landmarks are usable "
                             f"(at least {MIN_LANDMARKS} are needed)")
        points = torch.from_numpy(landmarks)[None]
        boxes = boxes_from_landmarks(points, self.crop_scale)
        if self.with_crops:
            pixels = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32) / 255
            crop, transform = crop_faces(pixels, boxes.float(), self.crop_size)
            crop, matrix = crop[0], transform.matrix[0].double()
        else:
            crop, matrix = None, crop_transform(square_boxes(boxes), self.crop_size).matrix[0]
        return {"image_size": image.shape[:2], "landmarks": landmarks, "crop_matrix": matrix.numpy(), "crop": crop}


def _keep_as_list(batch: list) -> list:
    return batch


# -- writing -----------------------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_fit_result(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write one result ``.npz`` atomically (a temporary file, then a rename): it exists whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)
    return path


def _write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray | None) -> Path:
    """Binary little-endian PLY (float32 positions, optional uint8 RGB, int32 triangles), atomically."""
    header = ["ply", "format binary_little_endian 1.0", "comment diffface fit", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z"]
    fields_ = [("xyz", "<f4", (3,))]
    if colours is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        fields_.append(("rgb", "u1", (3,)))
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    vertex_rows = np.empty(len(vertices), dtype=fields_)
    vertex_rows["xyz"] = vertices
    if colours is not None:
        vertex_rows["rgb"] = np.clip(colours * 255 + 0.5, 0, 255).astype(np.uint8)
    face_rows = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_rows["n"], face_rows["v"] = 3, faces
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "wb") as handle:
        handle.write(("\n".join(header) + "\n").encode("ascii"))
        handle.write(vertex_rows.tobytes())
        handle.write(face_rows.tobytes())
    os.replace(tmp, path)
    return path


def _write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray | None) -> Path:
    if path.suffix == ".ply":
        return _write_ply(path, vertices, faces, colours)
    from diffface.mesh_io import write_obj

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_obj(path, np.round(vertices.astype(np.float64), 4), faces)


def result_path(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{key}.npz"


def failure_path(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{key}{FAILED_SUFFIX}"


class _Log:
    """Append-only jsonl log; a line cut short by a kill is closed before anything is appended."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if path.is_file() and path.stat().st_size > 0:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                needs_newline = existing.read(1) != b"\n"
        self.handle = open(path, "a", encoding="utf-8")
        if needs_newline:
            self.handle.write("\n")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record, default=str) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


# -- fitting -----------------------------------------------------------------------------------
def _fitted_landmarks(model: MorphableModel, params: FaceParameters) -> torch.Tensor:
    from diffface.synth import project_landmarks

    return project_landmarks(model, params)[0]


@dataclass
class _BatchFit:
    """A fitted batch: parameters in the crop frame and in the original frame, energies and flags."""

    crop_params: FaceParameters
    params: FaceParameters
    packed: torch.Tensor
    landmarks: torch.Tensor
    energies: dict
    flags: dict
    landmarks_crop: torch.Tensor


def _fit_batch(model: MorphableModel, items: list[dict], config: FitJobConfig, device: torch.device) -> _BatchFit:
    size = config.image_size
    # stage 1 touches a few hundred vertices only, so float64 costs nothing and makes each image's fit
    # independent of the batch it shares (in float32 the LM steps amplify rounding to ~1e-2 in α)
    stage1_dtype = torch.float64 if config.landmarks_float64 else torch.float32
    observed = torch.from_numpy(np.stack([it["landmarks"] for it in items])).to(device, torch.float64)
    matrix = torch.from_numpy(np.stack([it["crop_matrix"] for it in items])).to(device, torch.float64)
    scale, offset = matrix[:, 0, :1], matrix[:, :2, 2]
    landmarks_crop = observed * scale[:, None] + offset[:, None]
    stage1 = fit_landmarks(model, landmarks_crop.to(stage1_dtype), (size, size), config.landmarks)
    params = stage1.params.map(lambda t: t.to(torch.float32))
    energies = {"landmarks/total": stage1.energy, "landmarks/landmarks": stage1.landmark_energy,
                "landmarks/id_prior": stage1.id_prior, "landmarks/exp_prior": stage1.exp_prior}
    flags = {"diverged": torch.zeros(len(items), dtype=torch.bool, device=device)}
    texture = "texture" in config.stages
    if texture:
        crops = torch.stack([it["crop"] for it in items]).to(device)
        stage2 = fit_texture(model, crops, landmarks_crop.to(torch.float32), params, config.texture)
        params = stage2.params
        energies.update({"texture/total": stage2.energy, "texture/texture": stage2.texture,
                         "texture/landmarks": stage2.landmarks, "texture/albedo_prior": stage2.albedo_prior,
                         "texture/exp_prior": stage2.exp_prior})
        flags["diverged"] = stage2.diverged.to(device)
    params = params.detach()
    original = replace(params, focal=(params.focal / scale).float(),
                       principal_point=((params.principal_point - offset) / scale).float())
    packed = model.layout.pack(original, include_fitting=texture)
    with torch.no_grad():
        fitted = _fitted_landmarks(model, original)
    finite_energy = torch.stack([e.detach().isfinite() for e in energies.values()], -1).all(-1)
    flags["nonfinite"] = ~(finite_energy & packed.isfinite().all(-1) & fitted.isfinite().all(-1).all(-1))
    flags["partial_landmarks"] = ~observed.isfinite().all(-1).all(-1)
    return _BatchFit(crop_params=params, params=original, packed=packed, landmarks=fitted,
                     energies={k: v.detach() for k, v in energies.items()}, flags=flags,
                     landmarks_crop=landmarks_crop.float())


def _result_arrays(item: dict, fit: _BatchFit, b: int, model: MorphableModel, config: FitJobConfig) -> dict:
    texture = "texture" in config.stages
    return {
        "format": np.array(RESULT_FORMAT),
        "image": np.array(item["image"]),
        "key": np.array(item["key"]),
        "image_size": np.asarray(item["image_size"], dtype=np.int64),
        "stages": np.array(list(config.stages)),
        "params": fit.packed[b].cpu().numpy().astype(np.float32),
        "param_names": np.array(model.layout.names(include_fitting=texture)),
        "landmarks": fit.landmarks[b].cpu().numpy().astype(np.float32),
        "landmarks_observed": np.asarray(item["landmarks"], dtype=np.float32),
        "energy_names": np.array(list(fit.energies)),
        "energy_values": np.array([float(e[b]) for e in fit.energies.values()], dtype=np.float64),
        "flag_names": np.array(list(fit.flags)),
        "flag_values": np.array([bool(f[b]) for f in fit.flags.values()]),
        "crop_matrix": np.asarray(item["crop_matrix"], dtype=np.float64),
        "crop_size": np.array(config.image_size, dtype=np.int64),
        "model_name": np.array(model.name),
        "model_fingerprint": np.array(model.fingerprint),
    }


# -- distributed ---------------------------------------------------------------------------
def _world() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(world: int) -> bool:
    """Start gloo when there are several ranks; True when this call started it (and must end it)."""
    import torch.distributed as dist

    if world <= 1 or dist.is_initialized():
        return False
    # gloo carries only a barrier and small Python objects, so it serves CPU and CUDA jobs alike
    dist.init_process_group("gloo")
    return True


def _barrier(world: int) -> None:
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        dist.barrier()


def _gather(obj, world: int) -> list:
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out
    return [obj]


# -- TensorBoard -------------------------------------------------------------------------------
class _Board:
    """Scalars per batch and an overlay grid now and then (rank 0 only)."""

    def __init__(self, out_dir: Path, model: MorphableModel, config: FitJobConfig):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"))
        self.model, self.config, self.renderer = model, config, None

    def scalars(self, fit: _BatchFit, images_per_s: float, step: int) -> None:
        for name, values in fit.energies.items():
            finite = values[values.isfinite()]
            if finite.numel():
                self.writer.add_scalar(f"energy/{name}", float(finite.mean()), step)
        self.writer.add_scalar("throughput/images_per_s", images_per_s, step)

    def overlay(self, items: list[dict], fit: _BatchFit, step: int) -> None:
        """Rows of (crop with observed landmarks green and fitted red, the fit rendered over the crop)."""
        from diffface.lighting import ambient_sh_coefficients
        from diffface.renderers import FaceRenderer
        from diffface.report_images import overlay_landmarks, to_uint8_image

        n = min(self.config.overlay_samples, len(items))
        if n == 0:
            return
        size = self.config.image_size
        crops = []
        for it in items[:n]:
            if it.get("crop") is not None:
                crops.append(it["crop"])
            else:
                pixels = torch.from_numpy(read_image(it["image"])).permute(2, 0, 1)[None].float() / 255
                # the crop box whose transform is the stored matrix: side = size / s, corner = -(t + 0.5) / s
                m = torch.from_numpy(it["crop_matrix"]).float()
                side = size / m[0, 0]
                x0, y0 = -(m[0, 2] + 0.5) / m[0, 0], -(m[1, 2] + 0.5) / m[0, 0]
                crops.append(crop_faces(pixels, torch.stack([x0, y0, x0 + side, y0 + side])[None], size)[0][0])
        device = self.model.mean_shape.device
        crops = torch.stack(crops).to(device)
        params = fit.crop_params.index(slice(0, n))
        if params.beta is None:
            params.beta = torch.zeros(n, self.model.tex_dims, device=device)
        if params.sh is None:
            params.sh = ambient_sh_coefficients(n, ambient=0.9, direction=(0.0, 0.3, 1.0), directional=0.3,
                                                device=device)
        if self.renderer is None:
            self.renderer = FaceRenderer(self.model, size, backend="builtin").to(device)
        with torch.no_grad():
            rendered = self.renderer(params, crops).images.clamp(0, 1)
            fitted_crop = _fitted_landmarks(self.model, params)
        rows = []
        for b in range(n):
            left = overlay_landmarks(to_uint8_image(crops[b]), [
                (fit.landmarks_crop[b].cpu().numpy(), (80, 255, 80)), (fitted_crop[b].cpu().numpy(), (255, 60, 60))])
            rows.append(np.concatenate([np.asarray(left), to_uint8_image(rendered[b])], 1))
        self.writer.add_image("overlay/observed_green_fitted_red__render", np.concatenate(rows, 0), step,
                              dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


# -- the job -----------------------------------------------------------------------------------
def _check_compatible(out_dir: Path, config: FitJobConfig) -> None:
    path = out_dir / CONFIG_NAME
    if not path.is_file():
        return
    try:
        previous = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return
    old, new = _fit_settings(previous), _fit_settings(config.to_dict())
    if not (out_dir / RESULTS_DIR).is_dir() or old == new:
        return
    differ = [k for k in FIT_SETTINGS if old.get(k) != new.get(k)]
    raise ValueError(f"{out_dir} holds results fitted with other settings ({', '.join(differ)} differ from "
                     f"{path}); use a new --out, or delete {out_dir / RESULTS_DIR} to redo them")


def _is_done(out_dir: Path, key: str, retry_failed: bool) -> bool:
    return result_path(out_dir, key).is_file() or (not retry_failed and failure_path(out_dir, key).is_file())


def _remove_stale_temporaries(out_dir: Path) -> None:
    for folder in (out_dir / RESULTS_DIR, out_dir / "meshes"):
        if folder.is_dir():
            for tmp in folder.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def run_fit_job(source: str | Path | Sequence[FitInput], out_dir: str | Path, config: FitJobConfig = FitJobConfig(),
                on_batch: Callable[[int], None] | None = None) -> dict:
    """Fit every image of ``source`` (a folder, a list file, or :class:`FitInput` items), writing results as they finish.

    Args:
        source: folder of images, text file listing them, or the items themselves.
        out_dir: output folder (layout in the module docstring).
        config: the job's settings; saved as ``out_dir/config.yaml``.
        on_batch: optional callable receiving the number of images each batch finished.

    Returns:
        This rank's run figures (``images`` listed, ``shard``, ``skipped`` (done before), ``fitted``,
        ``failed``, ``seconds``, ``images_per_s``, ``rank``, ``world_size``) and, on rank 0, ``summary``
        (as written to ``summary.json``).

    Raises:
        ValueError / FileNotFoundError: bad input or configuration, or ``out_dir`` holds results of other settings.
    """
    out_dir = Path(out_dir)
    items = list(source) if not isinstance(source, (str, Path)) else list_fit_inputs(source)
    rank, world, local_rank = _world()
    started_dist = _init_distributed(world)
    try:
        return _run(items, out_dir, config, rank, world, local_rank, on_batch)
    finally:
        if started_dist:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(items: list[FitInput], out_dir: Path, config: FitJobConfig, rank: int, world: int, local_rank: int,
         on_batch) -> dict:
    from tqdm import tqdm

    _check_compatible(out_dir, config)
    device = torch.device(config.device)
    if device.type == "cuda" and device.index is None and world > 1:
        device = torch.device("cuda", local_rank)
    model = load_morphable_model(config.model).to(device)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out_dir)
        config.to_yaml(out_dir / CONFIG_NAME)
    _barrier(world)  # nobody writes before stale temporaries are gone

    shard = [(i, item) for i, item in enumerate(items) if i % world == rank]
    todo = [(i, item) for i, item in shard if not _is_done(out_dir, item.key, config.retry_failed)]
    dataset = FitImageDataset([item for _, item in todo], config.detector, config.detector_options,
                              config.image_size, config.crop_scale, "texture" in config.stages,
                              indices=[i for i, _ in todo])
    loader_options = {}
    if config.num_workers > 0 and config.detector in ("fan", "auto"):
        loader_options["multiprocessing_context"] = "spawn"  # a detector network must not be forked
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers,
                        collate_fn=_keep_as_list, **loader_options)
    log = _Log(out_dir / f"log_rank{rank}.jsonl")
    board = _Board(out_dir, model, config) if (config.tensorboard and rank == 0) else None
    counts = {"fitted": 0, "failed": 0}
    start = time.perf_counter()
    bar = tqdm(total=len(shard), initial=len(shard) - len(todo), unit="img", desc=f"fit ({'+'.join(config.stages)})",
               disable=not config.progress or rank != 0, dynamic_ncols=True)
    try:
        for batch_index, batch in enumerate(loader):
            good = [it for it in batch if it["status"] == "ok"]
            for it in batch:
                if it["status"] != "ok":
                    _record_failure(out_dir, it, rank, log)
                    counts["failed"] += 1
            fitted = _fit_and_write(model, good, config, device, out_dir, rank, log, counts)
            elapsed = time.perf_counter() - start
            rate = counts["fitted"] / elapsed if elapsed > 0 else 0.0
            if board is not None and fitted is not None:
                step = bar.n + len(batch)
                board.scalars(fitted[0], rate, step)
                if batch_index % config.overlay_every == 0:
                    board.overlay(fitted[1], fitted[0], step)
            bar.update(len(batch))
            bar.set_postfix(images_per_s=f"{rate:.1f}", failed=counts["failed"])
            if on_batch is not None:
                on_batch(len(batch))
    finally:
        bar.close()
        log.close()
        if board is not None:
            board.close()
    seconds = time.perf_counter() - start
    figures = {"images": len(items), "shard": len(shard), "skipped": len(shard) - len(todo), **counts,
               "seconds": round(seconds, 3),
               "images_per_s": round(counts["fitted"] / seconds, 3) if seconds > 0 and counts["fitted"] else None,
               "rank": rank, "world_size": world}
    every_rank = _gather(figures, world)
    _barrier(world)  # every rank's results are on disk before the summary is made
    if rank == 0:
        figures["summary"] = _write_summary(out_dir, len(items), every_rank)
    return figures


def _record_failure(out_dir: Path, item: dict, rank: int, log: _Log) -> None:
    record = {"image": item["image"], "key": item["key"], "status": "failed", "reason": item["reason"],
              "error": item.get("error"), "rank": rank}
    _write_text_atomic(failure_path(out_dir, item["key"]), json.dumps(record))
    log.write(record)


def _fit_and_write(model, good: list[dict], config: FitJobConfig, device, out_dir: Path, rank: int, log: _Log,
                   counts: dict):
    """Fit ``good`` as one batch (one by one if the batch fails) and write each result; returns the
    (fit, items) of the largest batch that succeeded, for TensorBoard."""
    if not good:
        return None
    try:
        fit = _fit_batch(model, good, config, device)
    except (ValueError, RuntimeError) as exc:
        if len(good) == 1:
            failure = {**good[0], "reason": f"{good[0]['image']}: fitting failed: {exc}", "error": type(exc).__name__}
            _record_failure(out_dir, failure, rank, log)
            counts["failed"] += 1
            return None
        # one bad sample must not cost the batch: fit each alone
        results = [_fit_and_write(model, [it], config, device, out_dir, rank, log, counts) for it in good]
        return next((r for r in results if r is not None), None)
    for b, item in enumerate(good):
        if config.save_meshes != "none":
            _save_mesh(model, fit, b, item, config, out_dir)
        write_fit_result(result_path(out_dir, item["key"]), _result_arrays(item, fit, b, model, config))
        failure_path(out_dir, item["key"]).unlink(missing_ok=True)
        log.write({"image": item["image"], "key": item["key"], "status": "ok", "rank": rank,
                   "energy": {k: float(v[b]) for k, v in fit.energies.items()},
                   "flags": {k: bool(v[b]) for k, v in fit.flags.items()}})
        counts["fitted"] += 1
    return fit, good


def _save_mesh(model: MorphableModel, fit: _BatchFit, b: int, item: dict, config: FitJobConfig, out_dir: Path) -> None:
    params = fit.params.index(slice(b, b + 1))
    with torch.no_grad():
        vertices = model.shape(params.alpha_id, params.alpha_exp)[0].cpu().numpy()
        colours = None
        if params.beta is not None and model.tex_dims:
            colours = model.albedo(params.beta)[0].cpu().numpy()
    path = Path(out_dir) / "meshes" / f"{item['key']}.{config.save_meshes}"
    _write_mesh(path, vertices, model.triangles.cpu().numpy(), colours)


# -- reading ------------------------------------------------------------------------------------
def read_fit_result(path: str | Path) -> dict:
    """One result file as a dict of arrays (strings as ``str``, energies and flags as dicts)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    if str(arrays.get("format", "")) != RESULT_FORMAT:
        raise ValueError(f"{path}: not a {RESULT_FORMAT} result (format {arrays.get('format')!r})")
    out = {k: (str(v) if v.dtype.kind == "U" and v.ndim == 0 else v) for k, v in arrays.items()}
    out["energy"] = dict(zip(map(str, arrays["energy_names"]), map(float, arrays["energy_values"])))
    out["flags"] = dict(zip(map(str, arrays["flag_names"]), map(bool, arrays["flag_values"])))
    out["param_names"] = [str(n) for n in arrays["param_names"]]
    out["stages"] = [str(s) for s in arrays["stages"]]
    return out


def read_fit_results(out_dir: str | Path) -> dict:
    """Every rank's results in ``out_dir`` as one table, rows sorted by key.

    Returns:
        ``key``, ``image``, ``model_fingerprint`` (N,) str arrays; ``params`` (N, P) float32 (rows
        with fewer entries, e.g. stage 1 only next to stage 2, padded with NaN); ``param_names`` (P,);
        ``landmarks``, ``landmarks_observed`` (N, 68, 2); ``image_size`` (N, 2); ``energy/<stage>/<term>``
        (N,) float64 (NaN where a stage did not run); ``flag/<name>`` (N,) bool; ``failed``: a list of
        ``{"image", "key", "reason", "error", "rank"}`` records of images recorded as bad.
    """
    folder = Path(out_dir) / RESULTS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no fit results here")
    paths = sorted(p for p in folder.rglob("*.npz") if not p.name.startswith("."))
    records = [read_fit_result(p) for p in paths]
    done = {r["key"] for r in records}
    failed = []
    for path in sorted(folder.rglob(f"*{FAILED_SUFFIX}")):
        if path.name.startswith("."):
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") not in done:
            failed.append(record)
    records.sort(key=lambda r: r["key"])
    names = max((r["param_names"] for r in records), key=len, default=[])
    table: dict[str, Any] = {
        "key": np.array([r["key"] for r in records], dtype=str),
        "image": np.array([r["image"] for r in records], dtype=str),
        "model_fingerprint": np.array([r["model_fingerprint"] for r in records], dtype=str),
        "param_names": names,
        "params": np.full((len(records), len(names)), np.nan, dtype=np.float32),
        "landmarks": np.stack([r["landmarks"] for r in records]) if records else np.zeros((0, 68, 2), np.float32),
        "landmarks_observed": (np.stack([r["landmarks_observed"] for r in records]) if records
                               else np.zeros((0, 68, 2), np.float32)),
        "image_size": np.stack([r["image_size"] for r in records]) if records else np.zeros((0, 2), np.int64),
    }
    for n, r in enumerate(records):
        if r["param_names"] != names[:len(r["param_names"])]:
            raise ValueError(f"{r['key']}: its parameter layout differs from the others' (another model?)")
        table["params"][n, :len(r["params"])] = r["params"]
    for term in sorted({t for r in records for t in r["energy"]}):
        table[f"energy/{term}"] = np.array([r["energy"].get(term, np.nan) for r in records], dtype=np.float64)
    for flag in sorted({f for r in records for f in r["flags"]}):
        table[f"flag/{flag}"] = np.array([r["flags"].get(flag, False) for r in records], dtype=bool)
    table["failed"] = failed
    return table


def _write_summary(out_dir: Path, listed: int, ranks: list[dict]) -> dict:
    table = read_fit_results(out_dir)
    energies = {k[len("energy/"):]: float(np.nanmean(v)) if np.isfinite(v).any() else None
                for k, v in table.items() if k.startswith("energy/")}
    summary = {
        "format": RESULT_FORMAT,
        "images": listed,
        "results": int(len(table["key"])),
        "failed": len(table["failed"]),
        "energy_mean": energies,
        "flags": {k[len("flag/"):]: int(v.sum()) for k, v in table.items() if k.startswith("flag/")},
        "model_fingerprints": sorted(set(table["model_fingerprint"].tolist())),
        "ranks": ranks,
        "failures": [{"image": f.get("image"), "reason": f.get("reason")} for f in table["failed"]],
    }
    _write_text_atomic(out_dir / SUMMARY_NAME, json.dumps(summary, indent=1))
    return summary
