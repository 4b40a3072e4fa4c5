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


# -- .ply, .off, .wrl, .npy/.npz and read_mesh ---------------------------------------------------

from diffface.mesh_io import read_mesh, read_npy_mesh, read_off, read_ply, read_wrl, write_ply  # noqa: E402

QUAD_VERTICES = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 2, 2]], dtype=np.float64)
QUAD_TRIANGLES = np.array([[0, 1, 2], [0, 2, 3], [4, 3, 2]])


def _random_mesh(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(40, 3)) * 100).astype(dtype), rng.integers(0, 40, size=(60, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_colours", [False, True])
def test_ply_round_trip_is_exact(tmp_path, dtype, with_colours):
    vertices, faces = _random_mesh(dtype)
    colours = np.random.default_rng(1).integers(0, 256, size=(40, 3)).astype(np.uint8) if with_colours else None
    path = write_ply(tmp_path / "mesh.ply", vertices, faces, colours)
    got_vertices, got_faces = read_ply(path)
    assert got_vertices.dtype == np.float64 and got_faces.dtype == np.int64
    np.testing.assert_array_equal(got_vertices, vertices.astype(np.float64))
    np.testing.assert_array_equal(got_faces, faces)
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.ply"]
    np.testing.assert_array_equal(read_mesh(path)[1], faces)


def _ply_header(fmt, polygon_type="uchar int", extra=""):
    return (f"ply\nformat {fmt} 1.0\ncomment test\nelement vertex 5\nproperty float x\nproperty float y\n"
            f"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n{extra}"
            f"element face 2\nproperty list {polygon_type} vertex_index\nend_header\n")


def test_ascii_ply_with_colours_and_a_quad(tmp_path):
    rows = "".join(f"{x} {y} {z} 255 0 0\n" for x, y, z in QUAD_VERTICES)
    path = tmp_path / "ascii.ply"
    path.write_text(_ply_header("ascii") + rows + "4 0 1 2 3\n3 4 3 2\n")
    vertices, faces = read_ply(path)
    np.testing.assert_array_equal(vertices, QUAD_VERTICES)
    np.testing.assert_array_equal(faces, QUAD_TRIANGLES)


@pytest.mark.parametrize("order, name", [("<", "binary_little_endian"), (">", "binary_big_endian")])
@pytest.mark.parametrize("mixed_polygons", [False, True])
def test_binary_ply_both_byte_orders_with_skipped_element(tmp_path, order, name, mixed_polygons):
    vertex_rows = np.zeros(5, dtype=[("xyz", order + "f4", (3,)), ("rgb", "u1", (3,))])
    vertex_rows["xyz"] = QUAD_VERTICES
    edges = np.array([(0, 1), (1, 2)], dtype=[("a", order + "i4"), ("b", order + "i4")])
    if mixed_polygons:
        face_bytes = (np.array([4], "u1").tobytes() + np.array([0, 1, 2, 3], order + "i4").tobytes()
                      + np.array([3], "u1").tobytes() + np.array([4, 3, 2], order + "i4").tobytes())
        expected = QUAD_TRIANGLES
    else:
        face_bytes = (np.array([3], "u1").tobytes() + np.array([0, 1, 2], order + "i4").tobytes()
                      + np.array([3], "u1").tobytes() + np.array([4, 3, 2], order + "i4").tobytes())
        expected = QUAD_TRIANGLES[[0, 2]]
    # an element before the faces that must be skipped by its size
    header = _ply_header(name, extra="element edge 2\nproperty int vertex1\nproperty int vertex2\n")
    path = tmp_path / "binary.ply"
    path.write_bytes(header.encode() + vertex_rows.tobytes() + edges.tobytes() + face_bytes)
    vertices, faces = read_ply(path)
    np.testing.assert_array_equal(vertices, QUAD_VERTICES)
    np.testing.assert_array_equal(faces, expected)


def test_point_cloud_ply_has_no_faces(tmp_path):
    path = tmp_path / "points.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty double x\nproperty double y\n"
                    "property double z\nend_header\n0 0 0\n1 2 3\n")
    vertices, faces = read_ply(path)
    assert vertices.shape == (2, 3) and faces.shape == (0, 3)


@pytest.mark.parametrize("keyword", ["OFF", "COFF"])
def test_off_with_colours_comments_and_a_quad(tmp_path, keyword):
    colour = " 0.5 0.5 0.5 1" if keyword == "COFF" else ""
    rows = "".join(f"{x} {y} {z}{colour}\n" for x, y, z in QUAD_VERTICES)
    path = tmp_path / "mesh.off"
    path.write_text(f"{keyword}\n# a comment\n5 2 0\n{rows}4 0 1 2 3 255 0 0\n3 4 3 2\n")
    vertices, faces = read_off(path)
    np.testing.assert_array_equal(vertices, QUAD_VERTICES)
    np.testing.assert_array_equal(faces, QUAD_TRIANGLES)
    np.testing.assert_array_equal(read_mesh(path)[0], QUAD_VERTICES)


# A cut-down BU-4DFE-style scan: VRML 2.0, a Transform holding a textured IndexedFaceSet, then a second
# shape; texture coordinates (2D `point` lists, `texCoordIndex`) must not be taken for geometry.
BU4DFE_WRL = """#VRML V2.0 utf8
# Produced by 3dMD, a comment with point [ 9 9 9 ] in it
Transform {
  children [
    Shape {
      appearance Appearance { texture ImageTexture { url "F001_Angry_000.bmp" } }
      geometry IndexedFaceSet {
        creaseAngle 3.0
        coord Coordinate {
          point [
            0 0 0, 1 0 0, 1 1 0,
            0 1 0
          ]
        }
        texCoord TextureCoordinate { point [ 0 0, 1 0, 1 1, 0 1 ] }
        coordIndex [ 0, 1, 2, 3, -1 ]
        texCoordIndex [ 0, 1, 2, 3, -1 ]
      }
    }
    Shape { geometry IndexedFaceSet { coord Coordinate { point [ 2 2 2, 3 3 3, 4 4 5 ] }
                                      coordIndex [ 0 1 2 -1 2 1 0 ] } }
  ]
}
"""


def test_wrl_bu4dfe_style_scan(tmp_path):
    path = tmp_path / "F001_Angry_000.wrl"
    path.write_text(BU4DFE_WRL)
    vertices, faces = read_wrl(path)
    assert vertices.shape == (7, 3)
    np.testing.assert_array_equal(vertices[6], [4, 4, 5])
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [4, 5, 6], [6, 5, 4]])
    np.testing.assert_array_equal(read_mesh(path)[1], faces)


def test_wrl_vrml1_triangles(tmp_path):
    path = tmp_path / "v1.wrl"
    path.write_text("#VRML V1.0 ascii\nSeparator { Coordinate3 { point [ 0 0 0, 1 0 0, 0 1 0, 1 1 0 ] }\n"
                    "IndexedFaceSet { coordIndex [ 0, 1, 2, -1, 1, 3, 2, -1 ] } }\n")
    vertices, faces = read_wrl(path)
    assert vertices.shape == (4, 3)
    np.testing.assert_array_equal(faces, [[0, 1, 2], [1, 3, 2]])


def test_npy_points_and_npz_mesh(tmp_path):
    vertices, faces = _random_mesh()
    np.save(tmp_path / "points.npy", vertices.astype(np.float32))
    got_vertices, got_faces = read_mesh(tmp_path / "points.npy")
    np.testing.assert_array_equal(got_vertices, vertices.astype(np.float32))
    assert got_faces.shape == (0, 3)
    np.savez(tmp_path / "mesh.npz", vertices=vertices, faces=faces)
    got_vertices, got_faces = read_npy_mesh(tmp_path / "mesh.npz")
    np.testing.assert_array_equal(got_vertices, vertices)
    np.testing.assert_array_equal(got_faces, faces)


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("name, content, message", [
    ("broken_mesh.ply", "plx\n", "not a PLY"),
    ("broken_mesh.ply", "ply\nformat ascii 1.0\nelement vertex 1\n", "end_header"),
    ("broken_mesh.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n", "x, y, z"),
    ("broken_mesh.ply", "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                        "property float z\nend_header\n0 0 0\n", "truncated"),
    ("broken_mesh.ply", "ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                        "property float z\nend_header\n\x00\x00", "truncated"),
    ("broken_mesh.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
                        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
                        "0 0 0\n3 0 1 2\n", "out of range"),
    ("broken_mesh.ply", "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty blob y\nend_header\n",
     "malformed PLY header"),
    ("broken_mesh.off", "PLY\n", "not an OFF"),
    ("broken_mesh.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n", "truncated"),
    ("broken_mesh.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1\n3 0 1 2\n", "malformed OFF vertex"),
    ("broken_mesh.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "out of range"),
    ("broken_mesh.wrl", "#VRML V2.0 utf8\nShape {}\n", "no 'Coordinate"),
    ("broken_mesh.wrl", "Coordinate { point [ 0 0 0, 1 0 ] }\n", "triples"),
    ("broken_mesh.wrl", "Coordinate { point [ 0 0 0, 1 0 x ] }\n", "malformed VRML"),
    ("broken_mesh.wrl", "Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] }\ncoordIndex [ 0 1 3 -1 ]\n", "out of range"),
    ("broken_mesh.npy", b"not numpy", "cannot read"),
    ("broken_mesh.npy", np.zeros((4, 2)), r"\(V, 3\)"),
    ("broken_mesh.stl", "solid\n", "unknown mesh suffix"),
])
def test_malformed_other_formats_raise_value_error_naming_the_file(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)
    with pytest.raises(ValueError, match=message) as exc:
        read_mesh(path)
    assert "broken_mesh" in str(exc.value)


def test_missing_file_names_the_file(tmp_path):
    for suffix in (".ply", ".off", ".wrl", ".npy"):
        with pytest.raises(ValueError, match=f"missing{suffix}"):
            read_mesh(tmp_path / f"missing{suffix}")


def test_write_ply_rejects_bad_colours(tmp_path):
    vertices, faces = _random_mesh()
    with pytest.raises(ValueError, match="colours"):
        write_ply(tmp_path / "mesh.ply", vertices, faces, np.zeros((40, 3)))
    assert not (tmp_path / "mesh.ply").exists()
