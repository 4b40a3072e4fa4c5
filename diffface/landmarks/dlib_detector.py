"""dlib's HOG face detector and 68-point shape predictor, fully offline.

dlib comes from the ``dlib-bin`` wheel; the predictor file ``shape_predictor_68_face_landmarks.dat``
from the ``face-recognition-models`` package, found through :mod:`importlib` without importing that
package (its ``__init__`` needs ``pkg_resources``, which new setuptools no longer ships). Both are in
the ``landmarks`` extra: ``pip install "diffface[landmarks]"``.

dlib's landmark order is iBUG's 68 points; its coordinates are integer pixel indices (0-based),
the same convention as diffface's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .detection import FaceDetection, LandmarkDetector, NUM_LANDMARKS, check_rgb_image

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = 'pip install "diffface[landmarks]"  (dlib-bin and face-recognition-models)'


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"the dlib detector needs dlib: {INSTALL_HINT} ({exc})") from exc
    return dlib


def default_predictor_path() -> Path:
    """``shape_predictor_68_face_landmarks.dat`` inside the installed ``face-recognition-models`` package.

    Raises:
        FileNotFoundError: saying how to install it, when the package or the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"dlib's 68-point predictor ({PREDICTOR_FILE}) not found: the face-recognition-models "
                                f"package is not installed; {INSTALL_HINT}, or pass predictor_path=")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / PREDICTOR_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"face-recognition-models is installed but has no models/{PREDICTOR_FILE}; "
                            f"reinstall it ({INSTALL_HINT}) or pass predictor_path=")


class DlibDetector(LandmarkDetector):
    """dlib's frontal face detector (HOG) followed by its 68-point shape predictor.

    Args:
        predictor_path: the ``.dat`` shape predictor; default: the one ``face-recognition-models`` ships.
        upsample: times the image is upsampled before face detection (finds smaller faces, slower).

    Example:
        >>> detector = DlibDetector()
        >>> face = detector.detect_one(read_image("photo.jpg"))     # largest face
        >>> face.landmarks.shape, face.box
        ((68, 2), array([x0, y0, x1, y1]))
    """

    name = "dlib"

    def __init__(self, predictor_path: str | Path | None = None, upsample: int = 1):
        dlib = _import_dlib()
        path = Path(predictor_path) if predictor_path is not None else default_predictor_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such dlib shape predictor file")
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a dlib shape predictor ({exc})") from exc
        self._detector = dlib.get_frontal_face_detector()
        self.predictor_path = path
        self.upsample = int(upsample)

    def detect(self, image: np.ndarray, image_path: str | Path | None = None,
               boxes: np.ndarray | None = None) -> list[FaceDetection]:
        """All faces found by dlib (or the landmarks inside given ``boxes``, skipping the face detector).

        Shape:
            image: (H, W, 3) uint8 RGB; boxes: (K, 4) ``(x0, y0, x1, y1)`` or None.
        """
        dlib = _import_dlib()
        image = check_rgb_image(image, image_path)
        if boxes is None:
            rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
            found = [(rect, float(score)) for rect, score in zip(rects, scores)]
        else:
            found = [(dlib.rectangle(*(int(round(v)) for v in box)), 1.0) for box in np.asarray(boxes).reshape(-1, 4)]
        detections = []
        for rect, score in found:
            shape = self._predictor(image, rect)
            if shape.num_parts != NUM_LANDMARKS:
                raise ValueError(f"{self.predictor_path}: predictor gives {shape.num_parts} points, not {NUM_LANDMARKS}")
            landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            detections.append(FaceDetection(landmarks=landmarks, box=box, score=score))
        return detections
