"""Training settings: :class:`TrainConfig`, a dataclass loadable from YAML and overridable by ``key=value``
(:class:`diffface.config_io.YamlConfig`, as every job's settings).

Every run saves its resolved config as ``RUN/config.yaml``; ``diffface train --config RUN/config.yaml``
repeats it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from diffface.atomic_io import write_text_atomic
from diffface.config_io import YamlConfig

LOSSES = ("mse", "2d3d")

# Settings a re-run into a run folder may change when it resumes: the length of the run (to extend it; the
# learning-rate drop then lands at lr_drop_at of the new length), how often it logs, validates and saves,
# where and with how many threads it runs, and the morphable model's file (its fingerprint must still be the
# checkpoint's, checked on its own). Every other setting (and the dataset) shapes the weights the checkpoint
# holds, so a resume must keep it.
RESUME_MAY_CHANGE = ("steps", "val_every", "checkpoint_every", "log_every", "val_auc_max_d", "tensorboard",
                     "overlay_samples", "num_workers", "cpu_threads", "device", "model", "preload")


@dataclass(frozen=True)
class TrainConfig(YamlConfig):
    """Settings of :func:`~diffface.networks.train.train`.

    Attributes:
        network: registered network name (:func:`~diffface.networks.registry.list_models`).
        width: the network's first-layer channels (10: the method's MobileFace).
        model: morphable model, ``"auto"`` (``builtin`` when the dataset was built with it) or a model file;
            its fingerprint must match the dataset's.
        steps: optimisation steps (one global batch each).
        batch_size: global batch, split evenly over ranks under ``torchrun``.
        lr, lr_final: Adam learning rate, and the rate from ``lr_drop_at · steps`` on. 3e-3 → 3e-4 instead of the
            method's 1e-4 → 1e-5 (at its batch 128 and GPU step counts): with the head started at zero and batch 64,
            3e-3 reached a validation AUC of 0.733 after 200 steps where 1e-3 reached 0.676 and 1e-2 0.651
            (docs/network.md, "The recipe").
        lr_drop_at: fraction of the steps after which ``lr_final`` applies.
        weight_decay: Adam's L2 weight decay.
        loss: ``"mse"`` (normalised parameters) or ``"2d3d"`` (vertices + projections).
        norm: per-vertex norm of the 2D+3D loss, ``"l2"`` or ``"l1"``.
        weight_3d, weight_2d: 2D+3D term weights (mm and crop pixels).
        weight_mse: with ``loss="2d3d"``, weight of a parameter-MSE term added to it (0: none).
        loss_vertices: vertices of the fixed random subset the 2D+3D loss compares (0: all).
        photometric_weight: weight of the self-supervised photometric loss (0: off).
        unlabeled: unlabelled face photos added to training through the photometric loss: a folder (searched
            recursively) or a text file listing image paths (:mod:`~diffface.networks.unlabeled`); ``""``: none.
            Needs ``photometric_weight > 0``; each step then also adds ``photometric_weight`` times the
            photometric loss of an unlabelled batch (the term ``photometric_unlabeled``).
        unlabeled_batch_size: global batch of unlabelled photos per step (0: ``batch_size``).
        augment: apply :class:`diffface.data.augment.Augmenter` to training crops.
        augment_options: :class:`diffface.data.augment.AugmentConfig` settings.
        val_every, checkpoint_every, log_every: steps between validations, checkpoints and loss logs.
        val_auc_max_d: range of the normalised distance ``d`` for the validation AUC.
        tensorboard: write ``RUN/tensorboard``; overlay_samples: rendered predictions per validation.
        seed: initial weights, data order and augmentation.
        num_workers: DataLoader worker processes.
        cpu_threads: torch intra-op threads of each training process on the CPU (restored afterwards);
            0: the cores left to it, ``os.cpu_count() // LOCAL_WORLD_SIZE − num_workers`` (at least 1), so
            that ranks, their DataLoader workers and OpenMP threads do not oversubscribe the cores (on 2
            cores, 2 threads beside one worker ran a step about 3× slower than 1 thread).
        device: ``cpu``, ``cuda`` (rank r of a ``torchrun`` job uses ``cuda:LOCAL_RANK``) or ``cuda:N``.
        preload: read the whole dataset into memory when training starts (crops as one uint8 array) instead
            of decoding a PNG and an ``.npz`` per item and step.
        zero_init_head: start the last layer at zero, so that the untrained network predicts the training split's
            mean parameters (the mean shape in the mean pose) instead of random ones; measured on 3,000 synthetic
            fits, 600 steps of batch 64: validation AUC 0.737 against 0.677 with PyTorch's default init.
        channels_last: run the network in channels-last memory format: 1.5x the images/s of a CPU step, but off
            by default because PyTorch's float32 channels-last CPU kernels (2.13) computed MobileFace's gradients
            with a worst-tensor error of 12% against float64 where the default layout's was 0.7%
            (tests/networks/test_train.py), enough to change a 4-step run's loss by 6%.
        init: a checkpoint (``model.pt``) whose weights and parameter statistics start the run: fine-tuning (its
            network, width, input size and morphable model must be this run's); ``""``: a new network.
    """

    network: str = "mobileface"
    width: int = 10
    model: str = "auto"
    steps: int = 30000
    batch_size: int = 64
    lr: float = 3e-3
    lr_final: float = 3e-4
    lr_drop_at: float = 2 / 3
    weight_decay: float = 1e-4
    loss: str = "2d3d"
    norm: str = "l2"
    weight_3d: float = 1.0
    weight_2d: float = 1.0
    weight_mse: float = 0.0
    loss_vertices: int = 0
    photometric_weight: float = 0.0
    unlabeled: str = ""
    unlabeled_batch_size: int = 0
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
    cpu_threads: int = 0
    device: str = "cpu"
    preload: bool = True
    zero_init_head: bool = True
    channels_last: bool = False
    init: str = ""

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.norm not in ("l1", "l2"):
            raise ValueError(f"norm must be l1 or l2, got {self.norm!r}")
        for name, low in (("steps", 1), ("batch_size", 1), ("width", 1), ("val_every", 1), ("checkpoint_every", 1),
                          ("log_every", 1), ("num_workers", 0), ("cpu_threads", 0), ("loss_vertices", 0), ("overlay_samples", 0),
                          ("unlabeled_batch_size", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        for name in ("lr", "lr_final", "weight_decay", "weight_3d", "weight_2d", "weight_mse", "photometric_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.lr_drop_at <= 1:
            raise ValueError(f"lr_drop_at must be in [0, 1], got {self.lr_drop_at}")
        if self.unlabeled and self.photometric_weight <= 0:
            raise ValueError(f"unlabeled photos ({self.unlabeled!r}) train only through the photometric loss; "
                             f"set photometric_weight > 0 (e.g. --set photometric_weight=0.1)")

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


def resume_conflicts(previous: dict, config: TrainConfig) -> dict[str, tuple]:
    """The settings outside :data:`RESUME_MAY_CHANGE` on which ``config`` differs from a run's saved settings
    ``previous`` (a ``TrainConfig.to_dict()``; keys it lacks count as their defaults, keys this version no
    longer has are ignored), as ``{name: (previous value, new value)}``."""
    old = {**TrainConfig().to_dict(), **previous}
    new = config.to_dict()
    return {k: (old[k], new[k]) for k in new if k not in RESUME_MAY_CHANGE and old[k] != new[k]}
