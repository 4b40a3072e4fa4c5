import json

import numpy as np
import pytest

from diffface.landmark_io import read_pts, write_pts
from diffface.landmarks import (AnnotationDetector, FaceDetection, annotation_path, read_landmark_file,
                                write_landmarks_json, write_landmarks_npy)


@pytest.fixture
def points():
    return np.random.default_rng(0).uniform(10, 90, (68, 2)).round(3)


def test_pts_round_trip_is_exact_and_one_based(tmp_path, points):
    write_pts(tmp_path / "a.pts", points)
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), points, atol=1e-9)
    first = (tmp_path / "a.pts").read_text().splitlines()[3].split()
    np.testing.assert_allclose([float(v) for v in first], points[0] + 1)   # 300W files are 1-based


def test_json_and_npy_round_trip(tmp_path, points):
    faces = [FaceDetection(points, [1, 2, 3, 4], 0.5), FaceDetection(points + 1, [5, 6, 7, 8])]
    write_landmarks_json(tmp_path / "a.json", faces, image="a.png")
    write_landmarks_npy(tmp_path / "b.npy", faces)
    for path in (tmp_path / "a.json", tmp_path / "b.npy"):
        read = read_landmark_file(path)
        assert len(read) == 2
        np.testing.assert_allclose(read[1], points + 1, atol=1e-3)
    (tmp_path / "c.json").write_text(json.dumps({"landmarks": points.tolist()}))
    np.testing.assert_allclose(read_landmark_file(tmp_path / "c.json")[0], points)


def test_annotation_detector_finds_files_beside_the_image(tmp_path, points):
    write_pts(tmp_path / "face.pts", points)
    (tmp_path / "face.png").write_bytes(b"")
    assert annotation_path(tmp_path / "face.png") == tmp_path / "face.pts"
    [face] = AnnotationDetector().detect(None, tmp_path / "face.png")
    np.testing.assert_allclose(face.landmarks, points, atol=1e-9)
    np.testing.assert_allclose(face.box, [*points.min(0), *points.max(0)], atol=1e-9)
    elsewhere = tmp_path / "ann"
    elsewhere.mkdir()
    np.save(elsewhere / "other.npy", points)
    [face] = AnnotationDetector(elsewhere).detect(None, tmp_path / "other.jpg")
    np.testing.assert_allclose(face.landmarks, points)


def test_bad_annotations_name_the_file(tmp_path, points):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        AnnotationDetector().detect(None, tmp_path / "nothing.png")
    np.save(tmp_path / "short.npy", points[:10])
    with pytest.raises(ValueError, match="short.npy"):
        read_landmark_file(tmp_path / "short.npy")
    bad = points.copy()
    bad[3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="nan.npy.*NaN"):
        read_landmark_file(tmp_path / "nan.npy")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        read_landmark_file(tmp_path / "broken.json")
    (tmp_path / "trunc.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(ValueError, match="trunc.pts"):
        read_landmark_file(tmp_path / "trunc.pts")
