import numpy as np
import pytest

from diffface.landmark_io import read_pts, write_pts


def test_roundtrip(tmp_path):
    points = np.random.default_rng(0).uniform(0, 200, (68, 2))
    path = write_pts(tmp_path / "a.pts", points)
    np.testing.assert_allclose(read_pts(path), points, atol=1e-3)
    assert path.read_text().startswith("version: 1\nn_points:  68\n{")


def test_reads_the_shared_300w_annotation(shared_data):
    points = read_pts(shared_data / "faces" / "image_0010.pts")
    assert points.shape == (68, 2)
    # eyes above the mouth, chin lowest, inside the 1280x1024 photo
    assert points[36:48, 1].mean() < points[48:68, 1].mean() < points[8, 1] + 1
    assert (points >= 0).all() and (points[:, 0] < 1280).all() and (points[:, 1] < 1024).all()


@pytest.mark.parametrize("content,message", [
    ("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "header says 3"),
    ("hello", "not a valid"),
    ("version: 1\nn_points: 1\n{\nnan 4\n}\n", "NaN"),
])
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.pts"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as exc:
        read_pts(path)
    assert "bad.pts" in str(exc.value)
