"""The job's settings: :class:`FitJobConfig` (a dataclass), loadable from YAML and overridable by dotted keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from diffface.landmarks import DETECTORS, InputLimits

from ..landmark_fitting import LandmarkFitConfig
from ..sequence_fitting import SequenceFitConfig
from ..texture_fitting import TextureFitConfig
from diffface.atomic_io import write_text_atomic
from diffface.config_io import YamlConfig, plain

STAGES = ("landmarks", "texture")
GROUP_BY = ("none", "folder", "csv", "video")
OVERLAY_FORMATS = ("none", "gif", "png", "mp4", "webm")
MESH_FORMATS = ("none", "obj", "ply")

# settings that change what a result holds: a re-run into the same DIR must agree on them
FIT_SETTINGS = ("model", "detector", "detector_options", "stages", "image_size", "crop_scale", "landmarks_float64",
                "landmarks", "texture", "group_by", "groups_csv", "video_stride", "max_group_frames", "sequence")


@dataclass
class FitJobConfig(YamlConfig):
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
        limits: images and landmarks refused as bad (:class:`~diffface.landmarks.InputLimits`:
            ``max_image_pixels``, ``min_image_side``, ``min_face_px``, ``max_outside_fraction``, ``outside_margin``).
        landmarks: stage-1 settings (:class:`~diffface.fitting.LandmarkFitConfig`).
        texture: stage-2 settings (:class:`~diffface.fitting.texture_fitting.TextureFitConfig`).
        group_by: ``none`` (every image alone), ``folder`` (a subfolder per subject), ``csv`` (``groups_csv``:
            image,subject rows) or ``video`` (a video file or a folder of videos, a subject each); see
            :mod:`diffface.fitting.job.groups`.
        groups_csv: the CSV of ``group_by: csv`` (default: INPUT itself).
        video_stride: with ``group_by: video``, fit every n-th frame.
        max_group_frames: a subject with more frames is fitted in consecutive segments of this many frames
            (each with its own identity; memory grows with the frames fitted together).
        sequence: how a subject's frames are tied (:class:`~diffface.fitting.sequence_fitting.SequenceFitConfig`:
            shared identity and albedo, ``smooth``: temporal smoothness; with ``smooth`` a subject's frames are one
            video: one camera, the same focal length in every frame).
        save_overlays: grouped jobs: ``none``, or ``gif``/``png``/``mp4``/``webm``: each subject's fitted mesh over
            its frames as ``DIR/overlays/<subject>.<format>``.
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
    limits: InputLimits = field(default_factory=InputLimits)
    landmarks: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    texture: TextureFitConfig = field(default_factory=TextureFitConfig)
    group_by: str = "none"
    groups_csv: str = ""
    video_stride: int = 1
    max_group_frames: int = 512
    sequence: SequenceFitConfig = field(default_factory=SequenceFitConfig)
    save_overlays: str = "none"

    def __post_init__(self):
        self.stages = tuple(self.stages)
        if self.stages not in (("landmarks",), ("landmarks", "texture")):
            raise ValueError(f"stages must be 'landmarks' or 'landmarks,texture' (stage 2 starts from stage 1), "
                             f"got {','.join(self.stages)!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown landmark source {self.detector!r}; choose one of {DETECTORS}")
        if self.group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {GROUP_BY}, got {self.group_by!r}")
        if self.group_by == "none" and (self.sequence.smooth or self.save_overlays != "none"):
            raise ValueError("smoothing (--smooth, sequence.smooth) and overlay animations (--overlays) need grouped "
                             "frames: give --group-by folder, csv or video")
        if self.save_overlays not in OVERLAY_FORMATS:
            raise ValueError(f"save_overlays must be one of {OVERLAY_FORMATS}, got {self.save_overlays!r}")
        if self.save_meshes not in MESH_FORMATS:
            raise ValueError(f"save_meshes must be one of {MESH_FORMATS}, got {self.save_meshes!r}")
        for name, low in (("batch_size", 1), ("num_workers", 0), ("image_size", 16), ("overlay_samples", 0),
                          ("overlay_every", 1), ("video_stride", 1), ("max_group_frames", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if not self.crop_scale > 0:
            raise ValueError(f"crop_scale must be positive, got {self.crop_scale}")

    # -- YAML and dotted overrides ------------------------------------------------------------
    def to_dict(self) -> dict:
        return plain(asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML; written (atomically) to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            write_text_atomic(Path(path), text)
        return text


def fit_settings(config_dict: dict) -> dict:
    """The settings a job's results depend on (a folder resumes only with the same): :data:`FIT_SETTINGS`, less
    the stage-2 settings where the texture stage does not run (a landmarks-only folder resumes whatever they are)."""
    settings = {k: config_dict.get(k) for k in FIT_SETTINGS}
    if "texture" not in (config_dict.get("stages") or ()):
        settings.pop("texture")
    return settings
