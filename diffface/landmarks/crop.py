"""Square face crops: a batched, differentiable crop-and-resize (kornia), with the transform it applied.

The transform maps source pixel coordinates to crop pixel coordinates (both with pixel centres
at integers, OpenCV), so landmarks and camera intrinsics move with the crop exactly:
``u' = s·u + t_x``, ``v' = s·v + t_y`` with ``s = size / side``. A crop box ``(x0, y0, x1, y1)`` is a
square in continuous pixel coordinates; its edges land on the crop's outer pixel edges
(``x0 → -0.5``, ``x1 → size - 0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.geometry.transform import warp_affine
from torch import nn

from diffface.checks import check_finite, check_shape


@dataclass(frozen=True)
class CropTransform:
    """A similarity (scale + translation) from source pixels to crop pixels.

    Attributes:
        matrix: ``[[s, 0, tx], [0, s, ty], [0, 0, 1]]`` per image.
        size: crop side in pixels.

    Shape:
        matrix: (B, 3, 3).
    """

    matrix: torch.Tensor
    size: int

    @property
    def scale(self) -> torch.Tensor:
        """Shape: -> (B, 1)."""
        return self.matrix[:, 0, :1]

    @property
    def offset(self) -> torch.Tensor:
        """Shape: -> (B, 2)."""
        return self.matrix[:, :2, 2]

    def apply_points(self, points: torch.Tensor) -> torch.Tensor:
        """Source pixels to crop pixels. Shape: (B, N, 2) -> (B, N, 2)."""
        check_shape(points, [self.matrix.shape[0], "N", 2], "points")
        return points * self.scale[:, None] + self.offset[:, None]

    def invert_points(self, points: torch.Tensor) -> torch.Tensor:
        """Crop pixels back to source pixels. Shape: (B, N, 2) -> (B, N, 2)."""
        check_shape(points, [self.matrix.shape[0], "N", 2], "points")
        return (points - self.offset[:, None]) / self.scale[:, None]

    def apply_intrinsics(self, intrinsics: torch.Tensor) -> torch.Tensor:
        """The camera matrix of the crop: ``matrix @ K``. Shape: (B, 3, 3) -> (B, 3, 3)."""
        check_shape(intrinsics, [self.matrix.shape[0], 3, 3], "intrinsics")
        return self.matrix.to(intrinsics.dtype) @ intrinsics

    def apply_camera(self, focal: torch.Tensor, principal_point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The method's ``f, (Px, Py)`` for the crop. Shape: (B, 1), (B, 2) -> (B, 1), (B, 2)."""
        check_shape(focal, [self.matrix.shape[0], 1], "focal")
        check_shape(principal_point, [self.matrix.shape[0], 2], "principal_point")
        return focal * self.scale, principal_point * self.scale + self.offset


def square_boxes(boxes: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Squares with the boxes' centres and ``scale`` times their longer side.

    Shape:
        boxes: (B, 4) ``(x0, y0, x1, y1)`` -> (B, 4).
    """
    check_shape(boxes, ["B", 4], "boxes")
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).amax(1, keepdim=True) * (scale / 2)
    return torch.cat([centre - half, centre + half], 1)


def boxes_from_landmarks(landmarks: torch.Tensor, scale: float = 1.25) -> torch.Tensor:
    """Square crop boxes around landmarks (NaN landmarks are ignored).

    Args:
        landmarks: landmarks in pixels.
        scale: side of the square over the longer side of the landmarks' tight box.

    Shape:
        landmarks: (B, N, 2) -> (B, 4).
    """
    check_shape(landmarks, ["B", "N", 2], "landmarks")
    finite = torch.isfinite(landmarks).all(-1, keepdim=True)
    if not finite.any(1).all():
        raise ValueError("landmarks: an image has no finite landmark to crop around")
    low = torch.where(finite, landmarks, torch.inf).amin(1)
    high = torch.where(finite, landmarks, -torch.inf).amax(1)
    return square_boxes(torch.cat([low, high], 1), scale)


def crop_transform(boxes: torch.Tensor, size: int) -> CropTransform:
    """The transform that maps square ``boxes`` onto a ``size × size`` crop.

    Shape:
        boxes: (B, 4) -> CropTransform with matrix (B, 3, 3).
    """
    check_shape(boxes, ["B", 4], "boxes")
    check_finite(boxes, "boxes")
    side = boxes[:, 2] - boxes[:, 0]
    if (side <= 0).any():
        raise ValueError(f"boxes must have x1 > x0, got sides {side.tolist()}")
    scale = size / side
    zero, one = torch.zeros_like(scale), torch.ones_like(scale)
    tx, ty = -scale * boxes[:, 0] - 0.5, -scale * boxes[:, 1] - 0.5
    matrix = torch.stack([torch.stack([scale, zero, tx], -1), torch.stack([zero, scale, ty], -1),
                          torch.stack([zero, zero, one], -1)], 1)
    return CropTransform(matrix=matrix, size=int(size))


def crop_faces(images: torch.Tensor, boxes: torch.Tensor, size: int = 96,
               padding_mode: str = "zeros") -> tuple[torch.Tensor, CropTransform]:
    """Crop square boxes out of a batch of images and resize them to ``size × size`` (bilinear).

    Differentiable with respect to the images and the boxes. Areas outside an image are filled per
    ``padding_mode`` (``"zeros"``, ``"border"`` or ``"reflection"``). Non-square boxes are made square
    around their centre first (:func:`square_boxes`).

    Args:
        images: float images.
        boxes: ``(x0, y0, x1, y1)`` per image in pixels.
        size: crop side (96 for the network).

    Returns:
        ``(crops, transform)``; ``transform.apply_points`` moves landmarks into the crop.

    Shape:
        images: (B, C, H, W); boxes: (B, 4) -> crops (B, C, size, size).

    Example:
        >>> crops, tf = crop_faces(images, boxes_from_landmarks(landmarks), 96)
        >>> landmarks_in_crop = tf.apply_points(landmarks)
    """
    check_shape(images, ["B", "C", "H", "W"], "images")
    check_shape(boxes, [images.shape[0], 4], "boxes")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point (scale uint8 to [0, 1] first), got {images.dtype}")
    transform = crop_transform(square_boxes(boxes.to(images.dtype)), size)
    crops = warp_affine(images, transform.matrix[:, :2], dsize=(size, size), mode="bilinear",
                        padding_mode=padding_mode, align_corners=True)
    return crops, transform


class FaceCropper(nn.Module):
    """:func:`crop_faces` around landmarks (or given boxes) as a module.

    Args:
        size: crop side in pixels.
        scale: crop side over the landmarks' longer extent.
        padding_mode: fill outside the image.

    Shape:
        forward(images (B, C, H, W), landmarks (B, N, 2) = None, boxes (B, 4) = None)
        -> crops (B, C, size, size), CropTransform.
    """

    def __init__(self, size: int = 96, scale: float = 1.25, padding_mode: str = "zeros"):
        super().__init__()
        self.size, self.scale, self.padding_mode = size, scale, padding_mode

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None,
                boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, CropTransform]:
        if (landmarks is None) == (boxes is None):
            raise ValueError("give exactly one of landmarks= or boxes=")
        if boxes is None:
            boxes = boxes_from_landmarks(landmarks, self.scale)
        return crop_faces(images, boxes, self.size, self.padding_mode)
