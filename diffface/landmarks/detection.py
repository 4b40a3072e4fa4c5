"""What every landmark source returns, and the detector interface they share.

A source (a detector network, a shape predictor, or annotation files) maps one RGB image to the
faces it finds, each with 68 iBUG landmarks and a box. Coordinates are 0-based pixels with pixel
centres at integers (OpenCV), as everywhere in diffface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

NUM_LANDMARKS = 68


class NoFaceError(ValueError):
    """No face was found in an image (the message names the image)."""


@dataclass(frozen=True)
class FaceDetection:
    """One face: its 68 landmarks, its box and a confidence.

    Attributes:
        landmarks: iBUG-68 landmarks, 0-based pixels; NaN rows mark landmarks a source does not give.
        box: ``(x0, y0, x1, y1)`` in pixels (left, top, right, bottom).
        score: detector confidence (1 for annotations).

    Shape:
        landmarks: (68, 2) float64; box: (4,) float64.
    """

    landmarks: np.ndarray
    box: np.ndarray
    score: float = 1.0

    def __post_init__(self):
        landmarks = np.asarray(self.landmarks, dtype=np.float64)
        box = np.asarray(self.box, dtype=np.float64)
        if landmarks.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"landmarks must be ({NUM_LANDMARKS}, 2), got {landmarks.shape}")
        if box.shape != (4,):
            raise ValueError(f"box must be (4,) = (x0, y0, x1, y1), got {box.shape}")
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "box", box)

    @property
    def area(self) -> float:
        """Box area in pixels² (how "largest face" is decided)."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))


def check_rgb_image(image: np.ndarray, image_path: str | Path | None = None) -> np.ndarray:
    """The image as a contiguous ``(H, W, 3)`` uint8 array, or a ``ValueError`` naming it.

    Shape:
        image: (H, W, 3) uint8 -> (H, W, 3) uint8.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{image_path or 'image'}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The tight box ``(x0, y0, x1, y1)`` around the finite landmarks. Shape: (N, 2) -> (4,)."""
    finite = np.asarray(landmarks, dtype=np.float64)
    finite = finite[np.isfinite(finite).all(1)]
    if len(finite) == 0:
        raise ValueError("no finite landmark to put a box around")
    return np.concatenate([finite.min(0), finite.max(0)])


def largest_face(detections: Sequence[FaceDetection]) -> FaceDetection:
    """The detection with the largest box (the usual choice for one-face photos)."""
    if not detections:
        raise NoFaceError("no face detected")
    return max(detections, key=lambda d: d.area)


def select_faces(detections: Sequence[FaceDetection], all_faces: bool = False) -> list[FaceDetection]:
    """All detections, largest first (``all_faces``), or just the largest one."""
    ordered = sorted(detections, key=lambda d: d.area, reverse=True)
    return ordered if all_faces else ordered[:1]


class LandmarkDetector(ABC):
    """A source of 68-point landmarks.

    Subclasses implement :meth:`detect`; :meth:`detect_one` and :meth:`detect_batch` are built on it.
    ``image_path`` is passed along for sources that read files beside the image (annotations) and
    for error messages.
    """

    #: short name used by the CLI (``--detector``)
    name: str = "detector"

    @abstractmethod
    def detect(self, image: np.ndarray, image_path: str | Path | None = None) -> list[FaceDetection]:
        """Every face in one image, in no particular order (empty list: no face).

        Shape:
            image: (H, W, 3) uint8 RGB.
        """

    def detect_one(self, image: np.ndarray, image_path: str | Path | None = None) -> FaceDetection:
        """The largest face of an image.

        Raises:
            NoFaceError: naming the image, when there is none.
        """
        detections = self.detect(image, image_path)
        if not detections:
            raise NoFaceError(f"{image_path or 'image'}: no face found by the {self.name} detector")
        return largest_face(detections)

    def detect_batch(self, images: Sequence[np.ndarray],
                     image_paths: Sequence[str | Path] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The largest face of each image, stacked.

        Raises:
            NoFaceError: naming the first image without a face.

        Shape:
            images: N × (H, W, 3) uint8 -> landmarks (N, 68, 2), boxes (N, 4).
        """
        paths = list(image_paths) if image_paths is not None else [None] * len(images)
        faces = [self.detect_one(image, path) for image, path in zip(images, paths)]
        if not faces:
            return np.zeros((0, NUM_LANDMARKS, 2)), np.zeros((0, 4))
        return np.stack([f.landmarks for f in faces]), np.stack([f.box for f in faces])
