"""The job's settings: :class:`FitJobConfig` (a dataclass), loadable from YAML and overridable by dotted keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from diffface.landmarks import DETECTORS

from ..landmark_fitting import LandmarkFitConfig
from ..texture_fitting import TextureFitConfig
from diffface.atomic_io import write_text_atomic

STAGES = ("landmarks", "texture")
MESH_FORMATS = ("none", "obj", "ply")

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
            write_text_atomic(Path(path), text)
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


def fit_settings(config_dict: dict) -> dict:
    return {k: config_dict.get(k) for k in FIT_SETTINGS}
