"""dlib on the real photo in shared/ against its 300W annotation."""

import numpy as np
import pytest

from diffface.landmark_io import read_pts
from diffface.landmarks import NoFaceError, read_image

INSTALL = 'pip install "diffface[landmarks]"'


@pytest.fixture(scope="module")
def detector(optional_import):
    optional_import("dlib", INSTALL)
    from diffface.landmarks import DlibDetector

    return DlibDetector()


def normalised_mean_error(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean point-to-point error over the inter-ocular (outer eye corner, 36-45) distance, as in 300W."""
    return float(np.linalg.norm(predicted - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


def test_dlib_on_the_shared_photo_is_within_3_percent(detector, shared_data):
    """The README's figure: 2.5 % of the inter-ocular distance (2.51 % measured); 3 % leaves a margin."""
    image = read_image(shared_data / "faces" / "image_0010.png")
    truth = read_pts(shared_data / "faces" / "image_0010.pts")
    face = detector.detect_one(image, "image_0010.png")
    nme = normalised_mean_error(face.landmarks, truth)
    print(f"dlib NME on image_0010 (inter-ocular): {100 * nme:.2f} %")
    assert nme < 0.03
    x0, y0, x1, y1 = face.box
    assert x0 < truth[:, 0].mean() < x1 and y0 < truth[:, 1].mean() < y1
    # the same landmarks from the given box, without the face detector
    [again] = detector.detect(image, boxes=face.box[None])
    np.testing.assert_allclose(again.landmarks, face.landmarks, atol=1.0)


def test_grayscale_photo_works_and_blank_image_has_no_face(detector, shared_data):
    image = read_image(shared_data / "faces" / "image_0010.png")
    gray = np.repeat(image.mean(2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert len(detector.detect(gray[::2, ::2].copy())) == 1
    with pytest.raises(NoFaceError, match="blank.png"):
        detector.detect_one(np.full((120, 160, 3), 90, np.uint8), "blank.png")


def test_bad_inputs(detector, tmp_path, optional_import):
    from diffface.landmarks import DlibDetector

    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="nope.dat"):
        DlibDetector(tmp_path / "nope.dat")
    (tmp_path / "fake.dat").write_bytes(b"not a predictor")
    with pytest.raises(ValueError, match="fake.dat"):
        DlibDetector(tmp_path / "fake.dat")
