"""Training crops: an antialiased square crop of a photo, and face parameters re-expressed in its camera.

The crop is the similarity of :func:`diffface.landmarks.crop_transform` (``u' = s·u + t``), so a camera
``(f, Px, Py)`` of the photo becomes ``(s·f, s·Px + tx, s·Py + ty)`` in the crop while rotation and
translation are unchanged: every model point projects to the crop-transformed projection in the photo.
A large face is first cropped at an integer multiple ``k·size`` and then averaged over ``k × k`` blocks,
which removes the aliasing of a plain bilinear downscale and maps pixel centres exactly as the
``size`` crop does (block ``i`` has its centre at ``k·i + (k-1)/2`` in the large crop).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from diffface.checks import check_shape
from diffface.landmarks.crop import CropTransform, crop_faces, crop_transform, square_boxes
from diffface.params import FaceParameters

MAX_SUPERSAMPLING = 8


def crop_antialiased(image: torch.Tensor, box: torch.Tensor, size: int) -> tuple[torch.Tensor, CropTransform]:
    """Crop a square ``box`` out of one image into ``size × size`` pixels, box-filtered when shrinking.

    Args:
        image: float image in [0, 1].
        box: ``(x0, y0, x1, y1)`` in pixels (made square around its centre).
        size: crop side.

    Returns:
        ``(crop, transform)``: the crop (zeros outside the image) and the float64 transform from image
        pixels to crop pixels.

    Shape:
        image: (3, H, W); box: (4,) -> crop (3, size, size), transform.matrix (1, 3, 3).

    Example:
        >>> crop, tf = crop_antialiased(torch.rand(3, 480, 640), torch.tensor([100., 50., 400., 350.]), 96)
        >>> crop.shape, tf.scale
        (torch.Size([3, 96, 96]), tensor([[0.3200]], dtype=torch.float64))
    """
    check_shape(image, [3, "H", "W"], "image")
    check_shape(box, [4], "box")
    box = square_boxes(box.to(torch.float64)[None])
    transform = crop_transform(box, size)
    factor = int(min(max(math.floor(float(box[0, 2] - box[0, 0]) / size), 1), MAX_SUPERSAMPLING))
    crop, _ = crop_faces(image[None], box.to(image.dtype), size * factor)
    if factor > 1:
        crop = F.avg_pool2d(crop, factor)
    return crop[0], transform


def params_in_crop(params: FaceParameters, transform: CropTransform) -> FaceParameters:
    """The same faces seen through the crop's camera: focal ``s·f``, principal point moved by the crop.

    Shape:
        params: FaceParameters (B, ...) in image pixels; transform.matrix: (B, 3, 3) -> FaceParameters (B, ...)
        in crop pixels.
    """
    matrix = transform.matrix.to(params.focal)
    focal, principal_point = CropTransform(matrix, transform.size).apply_camera(params.focal, params.principal_point)
    return replace(params, focal=focal, principal_point=principal_point)


def resize_transform(size: int, new_size: int, batch: int = 1, dtype: torch.dtype = torch.float64) -> CropTransform:
    """The similarity from a ``size`` crop to the same crop resampled to ``new_size`` pixels (edges kept).

    Shape:
        -> matrix (batch, 3, 3).
    """
    box = torch.tensor([[-0.5, -0.5, size - 0.5, size - 0.5]], dtype=dtype).expand(batch, 4)
    return crop_transform(box, new_size)
