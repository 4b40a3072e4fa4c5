"""Unlabelled face photos for training through the photometric loss (``TrainConfig.unlabeled``).

A source is a folder, searched recursively for images (``.png``, ``.jpg``, ``.jpeg`` and the other
endings of :data:`diffface.landmarks.images.IMAGE_SUFFIXES`; hidden folders left out), or a text file
listing image paths, one per line (relative paths start at the list's folder; blank lines and lines
starting with ``#`` are ignored). Each photo becomes one ``crop_size × crop_size`` crop:

* with an iBUG ``.pts`` file beside it (``photo.pts`` for ``photo.jpg``), the square of ``crop_scale``
  times the landmarks' longer extent around them, cropped antialiased exactly as ``diffface
  build-dataset`` crops its training faces (:func:`~diffface.landmarks.crop.boxes_from_landmarks`,
  :func:`~diffface.data.crops.crop_antialiased`);
* without one, the whole photo is taken to be the face crop: its centred square (side: the shorter
  image side) is resized to ``crop_size`` by the same antialiased crop. Such photos should already be
  cropped to the face about as tightly as build-dataset's crops are.

Every photo (and ``.pts``) is read once at construction, and an unreadable or corrupt one is skipped
with a warning naming the file. So the number of items, and with it the step-indexed data order of
:func:`~diffface.networks.data.global_batch`, is fixed before training starts, the same on every rank
and after a resume.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from diffface.data.crops import crop_antialiased
from diffface.landmark_io import read_pts
from diffface.landmarks.crop import boxes_from_landmarks
from diffface.landmarks.images import IMAGE_SUFFIXES, ImageReadError, read_image

#: build-dataset's default crop side over the landmarks' extent (``BuildConfig.crop_scale``)
CROP_SCALE = 1.25
#: added to the training seed for the unlabelled data order and augmentation, so that their draws are not
#: those of the labelled stream at the same positions
UNLABELED_SEED_OFFSET = 2 ** 32


def unlabeled_seed(seed: int) -> int:
    """The seed of the unlabelled photos' order and augmentation in a run seeded with ``seed``."""
    return seed + UNLABELED_SEED_OFFSET


def list_photo_paths(source: str | Path) -> list[Path]:
    """The photos of a folder (recursively, sorted) or of a list file (in its order).

    Raises:
        FileNotFoundError: naming ``source`` when it does not exist.
        ValueError: naming ``source`` when it lists no photo.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(source).parts))
    elif source.is_file():
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines()]
        paths = [source.parent / line for line in lines if line and not line.startswith("#")]
    else:
        raise FileNotFoundError(f"{source}: no such folder or list file of unlabelled photos")
    if not paths:
        raise ValueError(f"{source}: no photos (.png, .jpg, ...) found")
    return paths


def centred_square_box(height: int, width: int) -> torch.Tensor:
    """The largest centred square of an image, in pixels with centres at integers (edges at ``-0.5``).

    Shape:
        -> (4,) float64 ``(x0, y0, x1, y1)``.
    """
    side = min(height, width)
    x0, y0 = (width - side) / 2 - 0.5, (height - side) / 2 - 0.5
    return torch.tensor([x0, y0, x0 + side, y0 + side], dtype=torch.float64)


def face_box(photo: Path, height: int, width: int, crop_scale: float = CROP_SCALE) -> tuple[torch.Tensor, bool]:
    """The crop box of a photo: around the landmarks of ``photo.pts`` when it exists (as build-dataset),
    else the centred square. Returns ``(box (4,) float64, from_landmarks)``.

    Raises:
        ValueError: naming the ``.pts`` file when it is not valid.
    """
    pts = photo.with_suffix(".pts")
    if not pts.is_file():
        return centred_square_box(height, width), False
    landmarks = torch.from_numpy(read_pts(pts))
    return boxes_from_landmarks(landmarks[None], crop_scale)[0], True


def read_crop(photo: Path, box: torch.Tensor, crop_size: int) -> torch.Tensor:
    """The antialiased ``box`` crop of a photo, as build-dataset crops it.

    Shape:
        box: (4,) -> (3, crop_size, crop_size) float32 in [0, 1].
    """
    pixels = torch.from_numpy(read_image(photo)).permute(2, 0, 1).to(torch.float32) / 255
    return crop_antialiased(pixels, box, crop_size)[0]


@dataclass(frozen=True)
class UnlabeledPhoto:
    """One usable photo: its file, crop box ``(x0, y0, x1, y1)`` in its pixels, and whether the box comes
    from a ``.pts`` file (else it is the centred square)."""

    path: Path
    box: tuple[float, float, float, float]
    from_landmarks: bool


class UnlabeledPhotos(torch.utils.data.Dataset):
    """Face crops of unlabelled photos (see the module docstring), read one per ``__getitem__``.

    Args:
        source: a folder of photos or a text file listing them.
        crop_size: crop side (the network's input size).
        crop_scale: crop side over the ``.pts`` landmarks' longer extent (build-dataset's 1.25).

    Attributes:
        photos: the usable photos, in order.
        skipped: ``(path, reason)`` of every photo left out.

    Shape:
        item -> {"image": (3, crop_size, crop_size) float32 in [0, 1]}.

    Example:
        >>> photos = UnlabeledPhotos("wild_faces/", crop_size=96)
        >>> photos[0]["image"].shape
        torch.Size([3, 96, 96])
    """

    def __init__(self, source: str | Path, crop_size: int = 96, crop_scale: float = CROP_SCALE):
        if crop_size < 1:
            raise ValueError(f"crop_size must be at least 1, got {crop_size}")
        self.source, self.crop_size, self.crop_scale = Path(source), crop_size, crop_scale
        self.photos: list[UnlabeledPhoto] = []
        self.skipped: list[tuple[Path, str]] = []
        for path in list_photo_paths(source):
            try:
                height, width = read_image(path).shape[:2]
                box, from_landmarks = face_box(path, height, width, crop_scale)
            except (ImageReadError, ValueError) as exc:  # both name the file at fault
                warnings.warn(f"skipping unlabelled photo {path}: {exc}", stacklevel=2)
                self.skipped.append((path, str(exc)))
                continue
            self.photos.append(UnlabeledPhoto(path, tuple(box.tolist()), from_landmarks))
        if not self.photos:
            raise ValueError(f"{source}: none of its {len(self.skipped)} photos is readable")

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, index: int) -> dict:
        photo = self.photos[index]
        return {"image": read_crop(photo.path, torch.tensor(photo.box, dtype=torch.float64), self.crop_size)}
