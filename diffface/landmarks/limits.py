"""What input a face job refuses: images too large to decode safely, too small to hold a face, and
landmarks that cannot belong to the image they annotate.

A refused image is a recorded failure with the reason (``fit``, ``build-dataset``, ``predict``), never a
silent fit: a 1×1 photo or landmarks a million pixels off the image would otherwise be fitted, score
normally and give black crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import DEFAULT_MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class InputLimits:
    """Limits on the photos and landmarks a job accepts (a ``limits`` section of the job's config).

    Attributes:
        max_image_pixels: refuse images with more pixels (width × height) before decoding them; 0: no
            limit. The default is Pillow's (about 89.5 megapixels).
        min_image_side: refuse images whose shorter side has fewer pixels.
        min_face_px: refuse faces whose landmarks span fewer pixels (the longer side of their box).
        max_outside_fraction: refuse landmarks of which more than this share lie outside the image by
            more than ``outside_margin``.
        outside_margin: how far outside the image a landmark may lie and still count as in it, as a
            share of the image's longer side (faces cut by the frame are normal).
    """

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    min_image_side: int = 32
    min_face_px: float = 16.0
    max_outside_fraction: float = 0.5
    outside_margin: float = 0.25

    def __post_init__(self):
        checks = {"max_image_pixels": self.max_image_pixels >= 0, "min_image_side": self.min_image_side >= 1,
                  "min_face_px": self.min_face_px >= 0, "max_outside_fraction": 0 <= self.max_outside_fraction <= 1,
                  "outside_margin": self.outside_margin >= 0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"limits.{name} is out of range: {getattr(self, name)}")


def check_image_size(image_size: tuple[int, int], source: str | Path, limits: InputLimits = InputLimits()) -> None:
    """Raise ``ValueError`` naming ``source`` when the image (``(H, W)``) is smaller than ``limits`` allow."""
    height, width = int(image_size[0]), int(image_size[1])
    if min(height, width) < limits.min_image_side:
        raise ValueError(f"{source}: image too small to hold a face ({width}x{height} pixels; at least "
                         f"{limits.min_image_side} a side is needed, limits.min_image_side)")


def check_face_input(image_size: tuple[int, int], landmarks: np.ndarray, source: str | Path,
                     limits: InputLimits = InputLimits()) -> None:
    """Refuse an image and its landmarks that cannot be a face in that image.

    Args:
        image_size: ``(H, W)`` of the image.
        landmarks: the face's landmarks in its pixels (NaN rows: missing).
        source: what the message names (the image path).
        limits: the thresholds.

    Raises:
        ValueError: naming ``source`` and the reason: the image is too small, most landmarks lie outside it,
        or the face spans too few pixels.

    Shape:
        landmarks: (N, 2).
    """
    check_image_size(image_size, source, limits)
    height, width = int(image_size[0]), int(image_size[1])
    points = np.asarray(landmarks, dtype=np.float64)
    points = points[np.isfinite(points).all(1)]
    if not len(points):
        raise ValueError(f"{source}: no finite landmark")
    margin = limits.outside_margin * max(height, width)
    # pixel centres at integers: the image covers [-0.5, W - 0.5] × [-0.5, H - 0.5]
    outside = ((points[:, 0] < -0.5 - margin) | (points[:, 0] > width - 0.5 + margin)
               | (points[:, 1] < -0.5 - margin) | (points[:, 1] > height - 0.5 + margin))
    if outside.mean() > limits.max_outside_fraction:
        far = np.abs(points[outside] - np.array([width / 2, height / 2])).max()
        raise ValueError(f"{source}: {int(outside.sum())} of {len(points)} landmarks lie outside the {width}x{height} "
                         f"image (beyond a margin of {margin:.0f} px, up to {far:.3g} px from its centre); "
                         f"are they this image's?")
    extent = float((points.max(0) - points.min(0)).max())
    if extent < limits.min_face_px:
        raise ValueError(f"{source}: face too small ({extent:.1f} px across its landmarks; at least "
                         f"{limits.min_face_px:g} px is needed, limits.min_face_px)")
