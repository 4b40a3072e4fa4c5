"""Landmarks along a video: the face detector runs once, then each frame's landmarks come from a box
around the previous frame's landmarks.

Face detection (S3FD, dlib's HOG) is most of a detector's time; the landmark stage given a box is the
cheap part. :class:`LandmarkTracker` wraps any :class:`LandmarkDetector` and runs its full detection
on the first frame, after :meth:`LandmarkTracker.reset`, every ``redetect_every`` frames, and when
tracking is lost; in between it asks the detector for landmarks inside a box placed around the previous
landmarks. Detectors that cannot take boxes (annotations, :class:`AnnotationDetector`) run their own
detection on every frame.

The box: by default the detector's own box shape, measured on the last full detection (the detector's
box relative to the tight box of its landmarks) and placed around the previous frame's landmarks, so
on a still video the landmark stage sees exactly the box the detector would give it. A fixed
``margin`` instead grows the landmarks' tight box by that fraction of its sides.

Lost: the new landmarks are not finite, or their tight box overlaps the previous one by less than
``min_iou`` (intersection over union), or the box left the image. A landmark stage given a box that
no longer holds the face can still return a face-shaped set of points inside it (dlib's predictor
does), which no overlap test sees: ``redetect_every`` bounds how long such a miss can last.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .detection import FaceDetection, LandmarkDetector, NoFaceError, box_from_landmarks, largest_face

#: ``landmarks_in_boxes(image, boxes (K, 4)) -> K detections`` (see :func:`box_landmarker`)
BoxLandmarker = Callable[[np.ndarray, np.ndarray], "list[FaceDetection]"]


@dataclass(frozen=True)
class TrackingConfig:
    """How :class:`LandmarkTracker` follows a face.

    Attributes:
        min_iou: tracking is lost when the tight boxes of consecutive frames' landmarks overlap less than
            this (intersection over union); the frame is then detected afresh.
        margin: None: the box around the previous landmarks has the shape of the detector's box on the last
            full detection. A number: the landmarks' tight box grown by this fraction of its width and
            height on every side.
        redetect_every: also run the full detection every this many frames (0: only when needed).
    """

    min_iou: float = 0.5
    margin: float | None = None
    redetect_every: int = 0

    def __post_init__(self):
        if not 0.0 <= self.min_iou <= 1.0:
            raise ValueError(f"min_iou must lie in [0, 1], got {self.min_iou}")
        if self.margin is not None and not self.margin > -0.5:
            raise ValueError(f"margin must be > -0.5 (a box of positive size), got {self.margin}")
        if self.redetect_every < 0:
            raise ValueError(f"redetect_every must be >= 0, got {self.redetect_every}")


def box_landmarker(detector: LandmarkDetector) -> BoxLandmarker | None:
    """The detector's landmark stage on given face boxes, or None when it has none.

    FAN-like detectors offer ``landmarks_in_boxes(image, boxes)``; dlib-like ones take ``boxes=`` in
    ``detect`` (which then skips the face detector).

    Returns:
        ``f(image, boxes) -> list[FaceDetection]``, one per box, or None.

    Shape:
        image: (H, W, 3) uint8; boxes: (K, 4) ``(x0, y0, x1, y1)``.
    """
    in_boxes = getattr(detector, "landmarks_in_boxes", None)
    if callable(in_boxes):
        return in_boxes
    if "boxes" in inspect.signature(detector.detect).parameters:
        return lambda image, boxes: detector.detect(image, None, boxes=boxes)
    return None


def box_iou(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes (0 when either is empty). Shape: (4,), (4,)."""
    x0, y0 = np.maximum(first[:2], second[:2])
    x1, y1 = np.minimum(first[2:], second[2:])
    intersection = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    union = (np.prod(np.clip(first[2:] - first[:2], 0, None)) + np.prod(np.clip(second[2:] - second[:2], 0, None))
             - intersection)
    return float(intersection / union) if union > 0 else 0.0


def box_in_frame(landmark_box: np.ndarray, relative_box: np.ndarray) -> np.ndarray:
    """A box placed around landmarks: ``relative_box`` is in units of the landmarks' tight box, from its centre.

    Args:
        landmark_box: the landmarks' tight box ``(x0, y0, x1, y1)``.
        relative_box: ``(x0, y0, x1, y1)`` relative to that box's centre, divided by its width/height
            (``(-0.5, -0.5, 0.5, 0.5)`` gives the tight box back).

    Shape:
        (4,), (4,) -> (4,).
    """
    centre = (landmark_box[:2] + landmark_box[2:]) / 2
    size = landmark_box[2:] - landmark_box[:2]
    return np.concatenate([centre + relative_box[:2] * size, centre + relative_box[2:] * size])


def relative_box(landmark_box: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The inverse of :func:`box_in_frame`: ``box`` in units of ``landmark_box``. Shape: (4,), (4,) -> (4,)."""
    centre = (landmark_box[:2] + landmark_box[2:]) / 2
    size = landmark_box[2:] - landmark_box[:2]
    return np.concatenate([(box[:2] - centre) / size, (box[2:] - centre) / size])


def _tight_box(detection: FaceDetection) -> np.ndarray | None:
    """The landmarks' tight box, or None when the landmarks are not all finite or the box is flat."""
    if not np.isfinite(detection.landmarks).all():
        return None
    box = box_from_landmarks(detection.landmarks)
    return box if (box[2:] > box[:2]).all() else None


class LandmarkTracker:
    """The largest face of a video followed frame to frame, with the face detector run only when needed.

    Args:
        detector: any landmark source.
        config: when to detect afresh and which box to use.

    Attributes:
        full_detections: frames on which the detector's full detection ran (every frame for a detector
            without boxes).
        tracked: frames whose landmarks came from a box around the previous ones.
        lost: tracked attempts rejected (each followed by a full detection of that frame).
        frames: frames seen since construction (numbers frames in messages when no path is given).

    Example:
        >>> tracker = LandmarkTracker(DlibDetector())
        >>> for index, _, image in read_video_frames("talk.mp4"):
        ...     face = tracker.track(image)            # (68, 2) landmarks in face.landmarks
        >>> tracker.full_detections, tracker.tracked
        (1, 249)
    """

    def __init__(self, detector: LandmarkDetector, config: TrackingConfig = TrackingConfig()):
        self.detector = detector
        self.config = config
        self._in_boxes = box_landmarker(detector)
        self.full_detections = 0
        self.tracked = 0
        self.lost = 0
        self.frames = 0
        self.reset()

    @property
    def supports_boxes(self) -> bool:
        """Whether frames after the first can skip the face detector."""
        return self._in_boxes is not None

    def reset(self) -> None:
        """Forget the face: the next frame is detected afresh (call it at a cut or a new video)."""
        self._previous_box: np.ndarray | None = None
        self._relative_box: np.ndarray | None = None
        self._since_detection = 0

    def track(self, image: np.ndarray, image_path: str | Path | None = None) -> FaceDetection:
        """The face in the next frame.

        Args:
            image: the frame.
            image_path: the frame's file (annotation detectors read beside it; named in errors).

        Returns:
            The largest face on a full detection, else the face inside the box around the previous landmarks.

        Raises:
            NoFaceError: naming the frame (its path, else ``frame N``), when a full detection finds no face;
                the next frame is then detected afresh.

        Shape:
            image: (H, W, 3) uint8 RGB.
        """
        label = str(image_path) if image_path is not None else f"frame {self.frames}"
        self.frames += 1
        face = None
        if self._should_track():
            face = self._track(image)
            if face is None:
                self.lost += 1
            else:
                self.tracked += 1
                self._since_detection += 1
        if face is None:
            face = self._detect(image, image_path, label)
        self._previous_box = _tight_box(face)
        return face

    def _should_track(self) -> bool:
        every = self.config.redetect_every
        return (self._in_boxes is not None and self._previous_box is not None
                and not (every and self._since_detection + 1 >= every))

    def _detect(self, image: np.ndarray, image_path: str | Path | None, label: str) -> FaceDetection:
        """The full detection's largest face; it also sets the box shape used for the following frames."""
        self.full_detections += 1
        self._since_detection = 0
        detections = self.detector.detect(image, image_path)
        if not detections:
            self.reset()  # the face is gone: the next frame starts afresh, not from a stale box
            raise NoFaceError(f"{label}: no face found by the {self.detector.name} detector")
        face = largest_face(detections)
        tight = _tight_box(face)
        if tight is not None and (face.box[2:] > face.box[:2]).all():
            self._relative_box = relative_box(tight, face.box)
        return face

    def _next_box(self) -> np.ndarray:
        """The box to look in, around the previous frame's landmarks. Shape: -> (4,)."""
        margin = self.config.margin
        if margin is None and self._relative_box is not None:
            return box_in_frame(self._previous_box, self._relative_box)
        half = 0.5 + (margin or 0.0)
        return box_in_frame(self._previous_box, np.array([-half, -half, half, half]))

    def _track(self, image: np.ndarray) -> FaceDetection | None:
        """The face inside the box around the previous landmarks, or None when tracking is lost."""
        box = self._next_box()
        height, width = np.shape(image)[:2]
        if box[2] <= 0 or box[3] <= 0 or box[0] >= width - 1 or box[1] >= height - 1:
            return None  # the face left the picture
        found = self._in_boxes(image, box[None])
        if not found:
            return None
        face = found[0]
        tight = _tight_box(face)
        if tight is None or box_iou(tight, self._previous_box) < self.config.min_iou:
            return None
        return face
