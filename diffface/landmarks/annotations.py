"""Landmark annotations beside the images: 300W/iBUG ``.pts``, ``.npy`` and ``.json``.

For ``photo.jpg`` the annotation is ``photo.pts``, ``photo.npy`` or ``photo.json`` in the same folder
(or in ``annotation_dir``), looked up in that order.

* ``.pts``: 300W's format, 1-based coordinates (see :mod:`diffface.landmark_io`).
* ``.npy``: ``(68, 2)`` or ``(K, 68, 2)`` float array, 0-based pixels.
* ``.json``: ``{"faces": [{"landmarks": [[x, y], ...68], "box": [x0, y0, x1, y1], "score": s}, ...]}``
  or just ``{"landmarks": [[x, y], ...]}``, 0-based pixels; what :func:`write_landmarks_json` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from diffface.atomic_io import atomic_write, write_text_atomic
from diffface.landmark_io import read_pts

from .detection import FaceDetection, LandmarkDetector, NUM_LANDMARKS, box_from_landmarks

ANNOTATION_SUFFIXES = (".pts", ".npy", ".json")


def annotation_path(image_path: str | Path, annotation_dir: str | Path | None = None) -> Path | None:
    """The first existing ``.pts`` / ``.npy`` / ``.json`` with the image's stem, or None."""
    image_path = Path(image_path)
    folder = Path(annotation_dir) if annotation_dir is not None else image_path.parent
    for suffix in ANNOTATION_SUFFIXES:
        candidate = folder / (image_path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_landmark_file(path: str | Path) -> list[np.ndarray]:
    """Every face's landmarks in an annotation file.

    Raises:
        ValueError: naming the file, when it is unreadable, has the wrong shape or holds NaN.

    Shape:
        -> K × (68, 2) float64, 0-based pixels.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pts":
        faces = [read_pts(path)]
    elif suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable .npy landmark file ({exc})") from exc
        array = np.asarray(array, dtype=np.float64)
        faces = [array] if array.ndim == 2 else list(array) if array.ndim == 3 else [array]
    elif suffix == ".json":
        faces = [np.asarray(face["landmarks"], dtype=np.float64) for face in _json_faces(path)]
    else:
        raise ValueError(f"{path}: unknown landmark file type (use .pts, .npy or .json)")
    for face in faces:
        if face.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"{path}: expected {NUM_LANDMARKS} landmarks of (x, y), got shape {face.shape}")
        if not np.isfinite(face).all():
            raise ValueError(f"{path}: landmarks contain NaN or infinite values")
    return faces


def _json_faces(path: Path) -> list[dict]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON landmark file ({exc})") from exc
    if isinstance(content, dict) and "faces" in content:
        faces = content["faces"]
    elif isinstance(content, dict) and "landmarks" in content:
        faces = [content]
    else:
        raise ValueError(f'{path}: expected {{"faces": [{{"landmarks": ...}}]}} or {{"landmarks": ...}}')
    if not isinstance(faces, list) or not all(isinstance(f, dict) and "landmarks" in f for f in faces):
        raise ValueError(f'{path}: every face needs a "landmarks" list')
    return faces


def write_landmarks_json(path: str | Path, detections: Sequence[FaceDetection], image: str | None = None) -> Path:
    """Write detections as JSON (0-based pixels), atomically."""
    path = Path(path)
    content = {"image": image, "convention": "0-based pixels, pixel centres at integers",
               "faces": [{"landmarks": d.landmarks.round(3).tolist(), "box": d.box.round(3).tolist(),
                          "score": float(d.score)} for d in detections]}
    return write_text_atomic(path, json.dumps(content))


def write_landmarks_npy(path: str | Path, detections: Sequence[FaceDetection]) -> Path:
    """Write detections' landmarks as one ``(K, 68, 2)`` array, atomically."""
    path = Path(path)
    with atomic_write(path) as handle:
        np.save(handle, np.stack([d.landmarks for d in detections]) if detections else np.zeros((0, NUM_LANDMARKS, 2)))
    return path


class AnnotationDetector(LandmarkDetector):
    """Landmarks read from annotation files beside the images (``--detector pts``).

    Args:
        annotation_dir: look for the files here instead of beside each image.

    Raises (from :meth:`detect`):
        FileNotFoundError: naming the image, when it has no annotation file.
    """

    name = "pts"

    def __init__(self, annotation_dir: str | Path | None = None):
        self.annotation_dir = Path(annotation_dir) if annotation_dir is not None else None

    def detect(self, image: np.ndarray | None, image_path: str | Path | None = None) -> list[FaceDetection]:
        if image_path is None:
            raise ValueError("annotation landmarks need the image's path (to find its .pts/.npy/.json file)")
        path = annotation_path(image_path, self.annotation_dir)
        if path is None:
            where = self.annotation_dir or Path(image_path).parent
            raise FileNotFoundError(f"{image_path}: no landmark annotation ({', '.join(ANNOTATION_SUFFIXES)}) "
                                    f"named {Path(image_path).stem}.* in {where}")
        boxes = {}
        if path.suffix.lower() == ".json":
            boxes = {k: np.asarray(f["box"], dtype=np.float64) for k, f in enumerate(_json_faces(path)) if "box" in f}
        return [FaceDetection(landmarks=face, box=boxes.get(k, box_from_landmarks(face)))
                for k, face in enumerate(read_landmark_file(path))]
