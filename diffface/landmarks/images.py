"""Reading photos for landmarking and fitting: any format Pillow reads, always ``(H, W, 3)`` uint8 RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: file endings treated as images when a folder is scanned
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file is missing, unreadable or corrupt (the message names the file)."""


def to_rgb_uint8(picture: Image.Image) -> np.ndarray:
    """A Pillow image in any mode as RGB uint8: grayscale is repeated, alpha is dropped (composited on black
    where transparent), 16-bit and float images are scaled to 0-255.

    Shape:
        -> (H, W, 3) uint8.
    """
    if picture.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(picture, dtype=np.float64)
        high = 65535.0 if picture.mode.startswith("I;16") or values.max() > 255 else 255.0
        gray = np.clip(values / high * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = np.asarray(picture.convert("RGBA"), dtype=np.float64)
        rgb = rgba[..., :3] * (rgba[..., 3:] / 255.0)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(picture.convert("RGB"), dtype=np.uint8).copy()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8.

    Raises:
        ImageReadError: naming the file, when it is missing, not an image, truncated or empty.

    Shape:
        -> (H, W, 3) uint8.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with Image.open(path) as picture:
            picture.load()
            image = to_rgb_uint8(picture)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(f"{path}: image is empty ({image.shape[1]}x{image.shape[0]})")
    return image


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    Raises:
        FileNotFoundError: naming the folder if it does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
