"""Reading photos for landmarking and fitting: any format Pillow reads, always ``(H, W, 3)`` uint8 RGB."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

#: file endings treated as images when a folder is scanned (``.pbm``/``.pgm``/``.ppm``/``.pnm``: Netpbm,
#: which 300W-style folders can hold)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pbm", ".pgm", ".ppm", ".pnm")

#: files expected beside photos (landmark annotations, see :mod:`diffface.landmarks.annotations`), never
#: counted as left out
COMPANION_SUFFIXES = (".pts", ".npy", ".json")

#: the default limit on an image's width × height: Pillow's own default, about 89.5 megapixels
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

# Pillow's limit is a module global; diffface checks the size itself (against ``max_pixels``), so it turns
# Pillow's check off while it opens an image, one reader at a time
_PIL_LIMIT_LOCK = threading.Lock()


class ImageReadError(ValueError):
    """An image file is missing, unreadable, corrupt or too large (the message names the file)."""


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


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels (width × height) than this, before decoding them
            (a "decompression bomb" would otherwise fill the memory); ``None`` or 0: no limit.

    Raises:
        ImageReadError: naming the file, when it is missing, not an image, truncated, empty or too large.

    Shape:
        -> (H, W, 3) uint8.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with _PIL_LIMIT_LOCK:
            pil_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(path) as picture:
                    width, height = picture.size
                    if max_pixels and width * height > max_pixels:
                        raise ImageReadError(
                            f"{path}: image too large ({width}x{height} = {width * height:,} pixels, the limit is "
                            f"{max_pixels:,}; raise it with max_image_pixels / --max-image-pixels, 0 for none)")
                    picture.load()
                    image = to_rgb_uint8(picture)
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            MemoryError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageReadError(f"{path}: image is empty ({image.shape[1]}x{image.shape[0]})")
    return image


@dataclass
class ImageScan:
    """The images found in a folder and what was left out.

    Attributes:
        images: the image files, sorted by path.
        left_out: ``{suffix: count}`` of the other files (annotation files beside the photos, ``.pts``,
            ``.npy``, ``.json``, and hidden files are not counted); ``""`` for files without a suffix.
    """

    images: list[Path]
    left_out: dict[str, int] = field(default_factory=dict)


def left_out_note(folder: str | Path, left_out: dict[str, int]) -> str | None:
    """One line saying how many files of ``folder`` were not read as images (``left_out``: ``{suffix:
    count}``, see :class:`ImageScan`), or None when there were none."""
    if not left_out:
        return None
    count = sum(left_out.values())
    kinds = ", ".join(f"{suffix or '(no suffix)'}: {n}" for suffix, n in sorted(left_out.items()))
    return (f"{folder}: left out {count} file{'s' if count != 1 else ''} that "
            f"{'are' if count != 1 else 'is'} not an image ({kinds}); images are {', '.join(IMAGE_SUFFIXES)}")


def scan_images(paths) -> ImageScan:
    """Split files into images and the rest (counted by suffix; see :class:`ImageScan`)."""
    images, others = [], Counter()
    for path in paths:
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            images.append(path)
        elif suffix not in COMPANION_SUFFIXES and not path.name.startswith("."):
            others[suffix] += 1
    return ImageScan(sorted(images), dict(others))


def scan_image_folder(folder: str | Path) -> ImageScan:
    """The image files directly in ``folder`` (sorted) and the count of other files left out.

    Raises:
        FileNotFoundError: naming the folder if it does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of images")
    return scan_images(p for p in folder.iterdir() if p.is_file())


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    Raises:
        FileNotFoundError: naming the folder if it does not exist.
    """
    return scan_image_folder(folder).images
