"""The job's input: listing the images of a folder or list file, and the DataLoader dataset that reads them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from diffface.landmarks import (ImageReadError, InputLimits, NoFaceError, boxes_from_landmarks, check_face_input,
                                crop_faces, crop_transform, list_images, make_detector, read_image, scan_image_folder,
                                square_boxes)
from diffface.landmarks.images import IMAGE_SUFFIXES
from diffface.landmarks.tracking import LandmarkTracker
from diffface.workers import worker_dies_with_parent

MIN_LANDMARKS = 6  # fewer finite landmarks than this cannot pin down a pose


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


def left_out_files(source: str | Path) -> dict[str, int]:
    """``{suffix: count}`` of the files of a source folder that are not images (none for a list file)."""
    source = Path(source)
    return scan_image_folder(source).left_out if source.is_dir() else {}


@dataclass
class FitItem:
    """One image as a DataLoader worker read it, handed to the fitting loop and the TensorBoard monitor.

    ``status`` is ``"ok"`` or ``"failed"`` (then ``reason`` and ``error`` say why and the rest is None).

    Shape:
        image_size: (H, W); landmarks: (68, 2) float64 original pixels; crop_matrix: (3, 3) float64, original
        pixels to crop pixels; crop: (3, S, S) float32 in [0, 1], or None when the job needs no crops.
    """

    index: int
    image: str
    key: str
    status: str = "ok"
    reason: str | None = None
    error: str | None = None
    image_size: tuple[int, int] | None = None
    landmarks: np.ndarray | None = None
    crop_matrix: np.ndarray | None = None
    crop: torch.Tensor | None = None

    def failed(self, reason: str, error: str | None) -> "FitItem":
        """This item recorded as failed, for ``reason``."""
        return replace(self, status="failed", reason=reason, error=error)


class FitImageDataset(Dataset):
    """Reads an image and its landmarks (and, for stage 2, its fitting crop) per item, in DataLoader workers.

    Never raises for a bad image: the item is a :class:`FitItem` with ``status == "failed"``;
    images and landmarks outside ``limits`` (:class:`~diffface.landmarks.InputLimits`: too many pixels,
    too small, landmarks off the image, a face of a few pixels) are bad images too.
    The detector is built lazily in each worker process.

    Items: :class:`FitItem`.
    """

    def __init__(self, items: Sequence[FitInput], detector: str, detector_options: dict, crop_size: int,
                 crop_scale: float, with_crops: bool, indices: Sequence[int] | None = None,
                 limits: InputLimits = InputLimits(), track: bool = False):
        self.items = list(items)
        self.track = track
        self.limits = limits
        self.indices = list(indices) if indices is not None else list(range(len(self.items)))
        self.detector_name, self.detector_options = detector, dict(detector_options)
        self.crop_size, self.crop_scale, self.with_crops = crop_size, crop_scale, with_crops
        self._detector = None

    def __len__(self) -> int:
        return len(self.items)

    def reset_tracking(self) -> None:
        """Forget the tracked face (the next item starts a new video); nothing to do before the first item."""
        if self.track and self._detector is not None:
            self._detector.reset()

    def __getitem__(self, i: int) -> FitItem:
        item = self.items[i]
        record = FitItem(index=self.indices[i], image=str(item.path), key=item.key)
        try:
            return replace(record, **self._load(item))
        except (ImageReadError, NoFaceError, FileNotFoundError, ValueError) as exc:
            return record.failed(str(exc), type(exc).__name__)

    def _load(self, item: FitInput) -> dict:
        if self._detector is None:
            detector = make_detector(self.detector_name, **self.detector_options)
            self._detector = LandmarkTracker(detector) if self.track else detector
        image = read_image(item.path, self.limits.max_image_pixels)
        if self.track:
            landmarks = self._detector.track(image, item.path).landmarks
        else:
            landmarks = self._detector.detect_one(image, item.path).landmarks
        finite = np.isfinite(landmarks).all(1)
        if finite.sum() < MIN_LANDMARKS:
            raise ValueError(f"{item.path}: only {int(finite.sum())} of 68 landmarks are usable "
                             f"(at least {MIN_LANDMARKS} are needed)")
        check_face_input(image.shape[:2], landmarks, item.path, self.limits)
        points = torch.from_numpy(landmarks)[None]
        boxes = boxes_from_landmarks(points, self.crop_scale)
        if self.with_crops:
            pixels = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32) / 255
            crop, transform = crop_faces(pixels, boxes.float(), self.crop_size)
            crop, matrix = crop[0], transform.matrix[0].double()
        else:
            crop, matrix = None, crop_transform(square_boxes(boxes), self.crop_size).matrix[0]
        return {"image_size": image.shape[:2], "landmarks": landmarks, "crop_matrix": matrix.numpy(), "crop": crop}


class SubjectImageDataset(Dataset):
    """The frames of one subject per item, read in order (a worker reads a whole subject), with the face box
    tracked from frame to frame (:class:`~diffface.landmarks.LandmarkTracker`: the face detector runs on the
    first frame and when the track is lost, not on every frame).

    Items: list of :class:`FitItem` (one per frame; bad frames are failed items).
    """

    def __init__(self, subjects: Sequence[Sequence[FitInput]], detector: str, detector_options: dict, crop_size: int,
                 crop_scale: float, with_crops: bool, limits: InputLimits = InputLimits()):
        flat = [item for subject in subjects for item in subject]
        self.stops = np.cumsum([len(subject) for subject in subjects]).tolist()
        self.frames = FitImageDataset(flat, detector, detector_options, crop_size, crop_scale, with_crops,
                                      limits=limits, track=True)

    def __len__(self) -> int:
        return len(self.stops)

    def __getitem__(self, s: int) -> list[FitItem]:
        start = self.stops[s - 1] if s else 0
        self.frames.reset_tracking()
        return [self.frames[i] for i in range(start, self.stops[s])]


def keep_as_list(batch: list) -> list:
    """DataLoader ``collate_fn``: a batch stays a list of :class:`FitItem` (failed items carry no tensors)."""
    return batch


def make_loader(dataset: Dataset, config, batch_size: int) -> DataLoader:
    """The job's DataLoader over ``dataset``: ``config.num_workers`` workers that die with the job (even on
    SIGKILL), spawned rather than forked for network detectors; batches stay lists."""
    options = {}
    if config.num_workers > 0:
        # a worker must not outlive a job killed with SIGKILL (it would hold its memory forever)
        options["worker_init_fn"] = partial(worker_dies_with_parent, os.getpid())
        if config.detector in ("fan", "auto"):
            options["multiprocessing_context"] = "spawn"  # a detector network must not be forked
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=config.num_workers,
                      collate_fn=keep_as_list, **options)
