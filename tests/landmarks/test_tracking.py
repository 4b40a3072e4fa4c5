"""LandmarkTracker: the face detector runs once along a video, then landmarks come from boxes."""

from __future__ import annotations

import numpy as np
import pytest

from diffface.landmark_io import write_pts
from diffface.landmarks import (AnnotationDetector, FaceDetection, LandmarkDetector, LandmarkTracker, NoFaceError,
                                TrackingConfig, box_from_landmarks, box_iou, box_landmarker)

SIZE = 256


def template() -> np.ndarray:
    """A face-like set of 68 points around the origin: a jaw arc and an inner cloud. Shape: -> (68, 2)."""
    angles = np.linspace(0.15 * np.pi, 0.85 * np.pi, 17)
    jaw = np.stack([40 * np.cos(angles), 45 * np.sin(angles)], 1)
    inner = np.random.default_rng(0).uniform([-30, -35], [30, 30], size=(51, 2))
    return np.concatenate([jaw, inner])


def moving_track(count: int, step=(3.0, 1.5)) -> np.ndarray:
    """Landmarks of a face drifting across the picture. Shape: -> (count, 68, 2)."""
    return np.stack([template() + [80 + step[0] * k, 90 + step[1] * k] for k in range(count)])


def frame(index: int) -> np.ndarray:
    """A frame that tells the fake detectors its index. Shape: -> (256, 256, 3) uint8."""
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    image[0, 0, 0] = index
    return image


def detector_box(landmarks: np.ndarray) -> np.ndarray:
    """The fake face detector's box: taller than the landmarks (the forehead) and a little wider."""
    x0, y0, x1, y1 = box_from_landmarks(landmarks)
    width, height = x1 - x0, y1 - y0
    return np.array([x0 - 0.05 * width, y0 - 0.3 * height, x1 + 0.05 * width, y1 + 0.02 * height])


class FakeBoxDetector(LandmarkDetector):
    """Knows the true landmarks of each frame; finds them with or without a box, counting the calls.

    Args:
        track: landmarks per frame; a NaN frame has no face; ``in_box`` overrides what boxes give.
    """

    name = "fake"

    def __init__(self, track: np.ndarray, in_box: dict[int, np.ndarray] | None = None):
        self.track = track
        self.in_box = in_box or {}
        self.full_calls = 0
        self.boxes_given: list[np.ndarray] = []

    def _truth(self, image: np.ndarray) -> tuple[int, np.ndarray]:
        index = int(image[0, 0, 0])
        return index, self.track[index]

    def detect(self, image, image_path=None, boxes=None):
        index, landmarks = self._truth(image)
        if boxes is not None:
            self.boxes_given.append(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[0])
            points = self.in_box.get(index, landmarks)
            return [FaceDetection(landmarks=points, box=self.boxes_given[-1])]
        self.full_calls += 1
        if np.isnan(landmarks).all():
            return []
        return [FaceDetection(landmarks=landmarks, box=detector_box(landmarks), score=0.9)]


class FakeFullDetector(FakeBoxDetector):
    """The same, without box support (its detect takes no boxes)."""

    def detect(self, image, image_path=None):
        return super().detect(image, image_path)


def run(tracker: LandmarkTracker, count: int, paths=False) -> list[FaceDetection]:
    return [tracker.track(frame(k), f"clip_f{k:06d}.png" if paths else None) for k in range(count)]


def test_full_detection_runs_once_along_a_moving_face():
    track = moving_track(20)
    detector = FakeBoxDetector(track)
    tracker = LandmarkTracker(detector)
    faces = run(tracker, 20)
    assert detector.full_calls == 1 and tracker.full_detections == 1
    assert tracker.tracked == 19 and len(detector.boxes_given) == 19 and tracker.lost == 0
    np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), track)
    # each box has the detector's own shape, placed around the previous frame's landmarks
    for k, box in enumerate(detector.boxes_given, start=1):
        np.testing.assert_allclose(box, detector_box(track[k - 1]))


def test_a_still_face_gets_exactly_the_detectors_box():
    track = np.repeat(moving_track(1), 4, axis=0)
    detector = FakeBoxDetector(track)
    faces = run(LandmarkTracker(detector), 4)
    for face in faces:
        np.testing.assert_allclose(face.box, detector_box(track[0]))


def test_a_jump_beyond_the_threshold_triggers_a_detection():
    track = moving_track(10)
    track[5:] += [120.0, 60.0]  # a cut: the face is elsewhere from frame 5 on
    detector = FakeBoxDetector(track)
    tracker = LandmarkTracker(detector, TrackingConfig(min_iou=0.5))
    faces = run(tracker, 10)
    assert detector.full_calls == 2 and tracker.full_detections == 2 and tracker.lost == 1
    assert tracker.tracked == 8  # 1-4 and 6-9
    np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), track)
    np.testing.assert_allclose(faces[5].box, detector_box(track[5]))  # frame 5 came from the full detection


def test_a_small_move_within_the_threshold_is_tracked():
    """A move of a sixth of the face (IoU 0.63, other frames 0.89) is followed at the default 0.5, not at 0.8."""
    track = moving_track(10)
    track[5:] += [12.0, 0.0]
    default = LandmarkTracker(FakeBoxDetector(track))
    strict = LandmarkTracker(FakeBoxDetector(track), TrackingConfig(min_iou=0.8))
    run(default, 10), run(strict, 10)
    assert default.full_detections == 1 and strict.full_detections == 2


def test_non_finite_landmarks_from_a_box_mean_lost():
    track = moving_track(6)
    broken = track[3].copy()
    broken[10] = np.nan
    detector = FakeBoxDetector(track, in_box={3: broken})
    tracker = LandmarkTracker(detector)
    faces = run(tracker, 6)
    assert detector.full_calls == 2 and tracker.lost == 1
    assert np.isfinite(faces[3].landmarks).all()


def test_a_face_leaving_the_picture_is_detected_afresh():
    """The face moves 30 px left per frame; the box for frame 5 (around frame 4's landmarks) lies left of it."""
    track = moving_track(6, step=(-30.0, 0.0))
    detector = FakeBoxDetector(track)
    tracker = LandmarkTracker(detector, TrackingConfig(min_iou=0.3))
    run(tracker, 6)
    assert detector.boxes_given[-1][2] > 0 and len(detector.boxes_given) == 4  # frames 1-4 tracked
    assert detector.full_calls == 2 and tracker.lost == 1


def test_detector_without_boxes_runs_every_frame():
    track = moving_track(8)
    detector = FakeFullDetector(track)
    assert box_landmarker(detector) is None
    tracker = LandmarkTracker(detector)
    assert not tracker.supports_boxes
    faces = run(tracker, 8)
    assert detector.full_calls == 8 and tracker.full_detections == 8 and tracker.tracked == 0
    np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), track)


def test_landmarks_in_boxes_is_used_when_offered():
    """FAN-like detectors: ``landmarks_in_boxes(image, boxes)``."""

    class FanLike(FakeFullDetector):
        def landmarks_in_boxes(self, image, boxes):
            return FakeBoxDetector.detect(self, image, None, boxes=boxes)

    detector = FanLike(moving_track(5))
    assert box_landmarker(detector) is not None
    tracker = LandmarkTracker(detector)
    run(tracker, 5)
    assert detector.full_calls == 1 and tracker.tracked == 4


def test_redetect_every_and_reset():
    detector = FakeBoxDetector(moving_track(20))
    tracker = LandmarkTracker(detector, TrackingConfig(redetect_every=5))
    run(tracker, 20)
    assert detector.full_calls == 4 and tracker.tracked == 16  # frames 0, 5, 10, 15
    tracker = LandmarkTracker(FakeBoxDetector(moving_track(6)))
    tracker.track(frame(0)), tracker.track(frame(1))
    tracker.reset()
    tracker.track(frame(2)), tracker.track(frame(3))
    assert tracker.full_detections == 2 and tracker.tracked == 2


def test_fixed_margin_grows_the_landmarks_box():
    track = moving_track(3)
    detector = FakeBoxDetector(track)
    run(LandmarkTracker(detector, TrackingConfig(margin=0.1)), 3)
    x0, y0, x1, y1 = box_from_landmarks(track[1])
    width, height = x1 - x0, y1 - y0
    np.testing.assert_allclose(detector.boxes_given[1], [x0 - 0.1 * width, y0 - 0.1 * height,
                                                         x1 + 0.1 * width, y1 + 0.1 * height])


def test_no_face_names_the_frame():
    track = moving_track(6)
    track[3] = np.nan
    with pytest.raises(NoFaceError, match="frame 3: no face found by the fake detector"):
        run(LandmarkTracker(FakeFullDetector(track)), 6)
    with pytest.raises(NoFaceError, match="clip_f000003.png"):
        run(LandmarkTracker(FakeFullDetector(track)), 6, paths=True)
    # first frame of a tracking detector, and a lost track whose re-detection finds nothing
    with pytest.raises(NoFaceError, match="frame 0"):
        run(LandmarkTracker(FakeBoxDetector(track[3:])), 1)
    far = moving_track(6)[3] + 150
    detector = FakeBoxDetector(track, in_box={3: far})
    tracker = LandmarkTracker(detector)
    with pytest.raises(NoFaceError, match="frame 3"):
        run(tracker, 6)
    tracker.track(frame(4))  # after a lost face the next frame is detected afresh
    assert detector.full_calls == 3 and tracker.tracked == 2


def test_annotations_are_read_on_every_frame(tmp_path):
    track = moving_track(4)
    for k in range(4):
        write_pts(tmp_path / f"clip_f{k:06d}.pts", track[k])
    tracker = LandmarkTracker(AnnotationDetector())
    faces = [tracker.track(frame(k), tmp_path / f"clip_f{k:06d}.png") for k in range(4)]
    assert tracker.full_detections == 4 and tracker.tracked == 0
    np.testing.assert_allclose(np.stack([f.landmarks for f in faces]), track, atol=1e-3)


def test_box_iou_and_config_checks():
    box = np.array([0.0, 0.0, 10.0, 10.0])
    assert box_iou(box, box) == 1.0 and box_iou(box, box + 20) == 0.0
    assert box_iou(box, box + [5, 0, 5, 0]) == pytest.approx(50 / 150)
    assert box_iou(box, np.array([3.0, 3.0, 3.0, 8.0])) == 0.0  # an empty box
    for bad in ({"min_iou": 1.5}, {"margin": -0.5}, {"redetect_every": -1}):
        with pytest.raises(ValueError):
            TrackingConfig(**bad)


def test_dlib_tracking_matches_full_detection_on_a_moving_photo(optional_import, shared_data):
    """dlib on the real photo panned across 4 frames: one HOG detection, landmarks within 2 % of the inter-ocular
    distance of dlib's full detection on each frame (1.2 % at most measured)."""
    optional_import("dlib", 'pip install "diffface[landmarks]"')
    from diffface.landmarks import DlibDetector, read_image

    image = read_image(shared_data / "faces" / "image_0010.png")
    height, width = image.shape[:2]
    frames = [np.ascontiguousarray(image[10 + 2 * k:height - 30 + 2 * k, 6 * k:width - 60 + 6 * k]) for k in range(4)]
    detector = DlibDetector()
    tracker = LandmarkTracker(detector)
    tracked = [tracker.track(picture) for picture in frames]
    assert tracker.full_detections == 1 and tracker.tracked == 3
    for picture, face in zip(frames, tracked):
        full = detector.detect_one(picture).landmarks
        inter_ocular = np.linalg.norm(full[36] - full[45])
        assert np.linalg.norm(face.landmarks - full, axis=1).mean() / inter_ocular < 0.02
