"""Settings of ``diffface demo`` (:class:`DemoConfig`) and what its steps share (:class:`DemoRun`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from diffface.config_io import YamlConfig
from diffface.morphable_model import MorphableModel
from diffface.networks.export.config import FORMATS


METHODS = {  # evaluated method -> folder of its meshes, relative to DIR
    "mean shape": "evaluate/meanshape",
    "landmark fit": "fits/heldout_landmarks",
    "texture fit": "fits/heldout_texture",
    "network": "predict",
}


class DemoStepError(RuntimeError):
    """A step of the demo failed; the message names the step and its output folder."""


@dataclass
class DemoConfig(YamlConfig):
    """Settings of :func:`run_demo` (saved as ``DIR/config.json``, which ``diffface demo --config`` reads back);
    the defaults take a few minutes on 2 CPU cores.

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
        init: where training starts: ``auto`` fine-tunes the shipped network for this model and width
            (:mod:`diffface.networks.pretrained`, made by ``tools/make_pretrained.sh``) where there is one, else
            trains a new one; ``none`` always trains a new one; or a checkpoint file to fine-tune.
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
    init: str = "auto"
    export_formats: tuple[str, ...] = ("torchscript", "onnx")
    preview_faces: int = 6
    threads: int = 1

    def __post_init__(self):
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
    """What the steps share: the output folder, settings, model, the figures of the steps done so far and
    the command lines each step ran (``commands``: step -> shell lines, ``#`` lines for work done in Python)."""

    out: Path
    config: DemoConfig
    model: MorphableModel
    steps: dict = field(default_factory=dict)
    commands: dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)
