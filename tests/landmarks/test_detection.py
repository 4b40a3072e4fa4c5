import numpy as np
import pytest

from diffface.landmarks import (FaceDetection, LandmarkDetector, NoFaceError, box_from_landmarks, largest_face,
                                select_faces)


def _face(x0, size, score=1.0):
    rng = np.random.default_rng(int(x0))
    landmarks = x0 + rng.uniform(0, size, (68, 2))
    return FaceDetection(landmarks=landmarks, box=[x0, x0, x0 + size, x0 + size], score=score)


class Fixed(LandmarkDetector):
    name = "fixed"

    def __init__(self, faces):
        self.faces = faces

    def detect(self, image, image_path=None):
        return list(self.faces)


def test_largest_face_and_selection():
    small, big, middle = _face(0, 10), _face(50, 40), _face(100, 20)
    assert largest_face([small, big, middle]) is big
    assert select_faces([small, big, middle]) == [big]
    assert select_faces([small, big, middle], all_faces=True) == [big, middle, small]
    with pytest.raises(NoFaceError):
        largest_face([])


def test_detection_checks_shapes():
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        FaceDetection(landmarks=np.zeros((5, 2)), box=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="box"):
        FaceDetection(landmarks=np.zeros((68, 2)), box=[0, 0, 1])


def test_box_from_landmarks_ignores_nan():
    points = np.array([[1.0, 2.0], [5.0, -1.0], [np.nan, 100.0]])
    np.testing.assert_array_equal(box_from_landmarks(points), [1.0, -1.0, 5.0, 2.0])
    with pytest.raises(ValueError):
        box_from_landmarks(np.full((3, 2), np.nan))


def test_detect_batch_stacks_largest_faces_and_names_the_image_without_one():
    image = np.zeros((8, 8, 3), np.uint8)
    big = _face(50, 40)
    landmarks, boxes = Fixed([_face(0, 10), big]).detect_batch([image, image])
    assert landmarks.shape == (2, 68, 2) and boxes.shape == (2, 4)
    np.testing.assert_array_equal(landmarks[1], big.landmarks)
    with pytest.raises(NoFaceError, match="empty.png"):
        Fixed([]).detect_batch([image], ["empty.png"])
