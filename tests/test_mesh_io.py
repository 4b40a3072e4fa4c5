import numpy as np
import pytest

from diffface.mesh_io import read_obj, write_obj


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    rng = np.random.default_rng(0)
    vertices = (rng.normal(size=(50, 3)) * 100).astype(dtype)
    vertices[0] = [1e-30, -0.0, 123456.789]
    faces = rng.integers(0, 50, size=(80, 3))
    path = write_obj(tmp_path / "mesh.obj", vertices, faces)
    got_vertices, got_faces = read_obj(path)
    assert got_vertices.dtype == np.float64 and got_faces.dtype == np.int64
    np.testing.assert_array_equal(got_vertices, vertices.astype(np.float64))
    np.testing.assert_array_equal(got_faces, faces)
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.obj"]  # the temporary file was renamed


def test_reads_polygons_texture_normal_references_and_negative_indices(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text("# a quad and a triangle\nmtllib x.mtl\no quad\n"
                    "v 0 0 0\nv 1 0 0\nv 1 1 0 1.0\nv 0 1 0\nvt 0 0\nvn 0 0 1\ns off\n"
                    "f 1/1/1 2/1/1 3//1 4\n"
                    "v 2 2 2\nf -1 -2 -3\n")
    vertices, faces = read_obj(path)
    assert vertices.shape == (5, 3) and vertices[2].tolist() == [1, 1, 0]
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [4, 3, 2]])


def test_mesh_without_faces_reads_as_empty_triangles(tmp_path):
    path = tmp_path / "points.obj"
    path.write_text("v 0 0 0\nv 1 2 3\n")
    vertices, faces = read_obj(path)
    assert vertices.shape == (2, 3) and faces.shape == (0, 3)


@pytest.mark.parametrize("text, message", [
    ("", "no vertices"),
    ("f 1 2 3\n", "no vertices"),
    ("v 0 0\n", "malformed 'v'"),
    ("v 0 0 zero\n", "malformed 'v'"),
    ("v 0 0 0\nv 1 0 0\nf 1 2\n", "malformed 'f'"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n", "malformed 'f'"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "out of range"),
    ("v 0 0 0\nf -1 -2 -3\nv 1 0 0\nv 0 1 0\n", "out of range"),
    ("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
])
def test_malformed_files_raise_value_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "broken_mesh.obj"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as exc:
        read_obj(path)
    assert "broken_mesh.obj" in str(exc.value)


def test_unreadable_files_raise_value_error_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.obj"):
        read_obj(tmp_path / "missing.obj")
    binary = tmp_path / "binary.obj"
    binary.write_bytes(b"\xff\xfe\x00v 0 0 0")
    with pytest.raises(ValueError, match="binary.obj"):
        read_obj(binary)


@pytest.mark.parametrize("vertices, faces, message", [
    (np.zeros((3, 2)), np.array([[0, 1, 2]]), "vertices must be"),
    (np.zeros((3, 3)), np.array([[0, 1]]), "faces must be"),
    (np.zeros((3, 3)), np.array([[0.0, 1.0, 2.0]]), "faces must be"),
    (np.zeros((3, 3)), np.array([[0, 1, 3]]), "outside"),
    (np.full((3, 3), np.nan), np.array([[0, 1, 2]]), "NaN"),
])
def test_write_rejects_bad_input(tmp_path, vertices, faces, message):
    with pytest.raises(ValueError, match=message):
        write_obj(tmp_path / "mesh.obj", vertices, faces)
    assert not (tmp_path / "mesh.obj").exists()
