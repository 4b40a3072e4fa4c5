"""Training settings: :class:`TrainConfig`, a dataclass loadable from YAML and overridable by ``key=value``.

Every run saves its resolved config as ``RUN/config.yaml``; ``diffface train --config RUN/config.yaml``
repeats it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import yaml

from diffface.atomic_io import write_text_atomic
from diffface.config_io import read_yaml_mapping

LOSSES = ("mse", "2d3d")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`~diffface.networks.train.train`.

    Attributes:
        network: registered network name (:func:`~diffface.networks.registry.list_models`).
        width: the network's first-layer channels (10: the method's MobileFace).
        model: morphable model, ``"auto"`` (``builtin`` when the dataset was built with it) or a model file;
            its fingerprint must match the dataset's.
        steps: optimisation steps (one global batch each).
        batch_size: global batch, split evenly over ranks under ``torchrun``.
        lr, lr_final: Adam learning rate, and the rate from ``lr_drop_at · steps`` on.
        lr_drop_at: fraction of the steps after which ``lr_final`` applies.
        weight_decay: Adam's L2 weight decay.
        loss: ``"mse"`` (normalised parameters) or ``"2d3d"`` (vertices + projections).
        norm: per-vertex norm of the 2D+3D loss, ``"l2"`` or ``"l1"``.
        weight_3d, weight_2d: 2D+3D term weights (mm and crop pixels).
        weight_mse: with ``loss="2d3d"``, weight of a parameter-MSE term added to it (0: none).
        loss_vertices: vertices of the fixed random subset the 2D+3D loss compares (0: all).
        photometric_weight: weight of the self-supervised photometric loss (0: off).
        augment: apply :class:`diffface.data.augment.Augmenter` to training crops.
        augment_options: :class:`diffface.data.augment.AugmentConfig` settings.
        val_every, checkpoint_every, log_every: steps between validations, checkpoints and loss logs.
        val_auc_max_d: range of the normalised distance ``d`` for the validation AUC.
        tensorboard: write ``RUN/tensorboard``; overlay_samples: rendered predictions per validation.
        seed: initial weights, data order and augmentation.
        num_workers: DataLoader worker processes.
        device: ``cpu``, ``cuda`` (rank r of a ``torchrun`` job uses ``cuda:LOCAL_RANK``) or ``cuda:N``.
    """

    network: str = "mobileface"
    width: int = 10
    model: str = "auto"
    steps: int = 30000
    batch_size: int = 128
    lr: float = 1e-4
    lr_final: float = 1e-5
    lr_drop_at: float = 2 / 3
    weight_decay: float = 1e-4
    loss: str = "2d3d"
    norm: str = "l2"
    weight_3d: float = 1.0
    weight_2d: float = 1.0
    weight_mse: float = 0.0
    loss_vertices: int = 0
    photometric_weight: float = 0.0
    augment: bool = True
    augment_options: dict = field(default_factory=dict)
    val_every: int = 1000
    checkpoint_every: int = 1000
    log_every: int = 50
    val_auc_max_d: float = 1.0
    tensorboard: bool = True
    overlay_samples: int = 4
    seed: int = 0
    num_workers: int = 2
    device: str = "cpu"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.norm not in ("l1", "l2"):
            raise ValueError(f"norm must be l1 or l2, got {self.norm!r}")
        for name, low in (("steps", 1), ("batch_size", 1), ("width", 1), ("val_every", 1), ("checkpoint_every", 1),
                          ("log_every", 1), ("num_workers", 0), ("loss_vertices", 0), ("overlay_samples", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "lr_final", "weight_decay", "weight_3d", "weight_2d", "weight_mse", "photometric_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.lr_drop_at <= 1:
            raise ValueError(f"lr_drop_at must be in [0, 1], got {self.lr_drop_at}")

    @property
    def lr_drop_step(self) -> int:
        return int(round(self.lr_drop_at * self.steps))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML; written atomically to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text_atomic(Path(path), text)
        return text

    def updated(self, changes: dict, source: str = "config") -> "TrainConfig":
        """A copy with ``changes`` applied; unknown keys and wrongly typed values raise ``ValueError``
        naming ``source`` and the key."""
        if not isinstance(changes, dict):
            raise ValueError(f"{source}: expected a mapping of settings, got {changes!r}")
        current = self.to_dict()
        known = [f.name for f in fields(self)]
        typed = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"{source}: unknown setting {key!r}; TrainConfig has {', '.join(known)}")
            typed[key] = _typed(value, current[key], f"{source}: {key}")
        return replace(self, **typed)

    @classmethod
    def from_yaml(cls, path: str | Path, base: "TrainConfig | None" = None) -> "TrainConfig":
        return (base or cls()).updated(read_yaml_mapping(path), str(path))

    def with_overrides(self, overrides: Sequence[str]) -> "TrainConfig":
        """Apply ``key=value`` strings (values parsed as YAML: ``loss=mse``, ``augment_options={flip: false}``)."""
        changes = {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set {item!r}: expected key=value (e.g. loss=mse)")
            changes[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        return self.updated(changes, "--set")


def _typed(value, current, what: str):
    """``value`` as the type of ``current`` (bool, int, float, str or dict), else ``ValueError`` naming ``what``."""
    expected = type(current)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{what}: expected a mapping, got {value!r}")
        return dict(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{what}: expected {expected.__name__}, got {value!r}")
    return value
