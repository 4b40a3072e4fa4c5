import numpy as np
import pytest

from diffface.uv import cylindrical_uv, head_axis, orient_triangles_outward, outward_score


def sphere(rows=12, columns=16, radius=80.0):
    """A closed UV sphere with counter-clockwise (outward) triangles."""
    polar = np.linspace(0, np.pi, rows)[1:-1]
    azimuth = np.linspace(0, 2 * np.pi, columns, endpoint=False)
    p, a = np.meshgrid(polar, azimuth, indexing="ij")
    ring = np.stack([np.sin(p) * np.sin(a), np.cos(p), np.sin(p) * np.cos(a)], -1).reshape(-1, 3)
    vertices = np.vstack([[0, 1, 0], ring, [0, -1, 0]]) * radius
    index = 1 + np.arange(ring.shape[0]).reshape(rows - 2, columns)
    nxt = np.roll(index, -1, axis=1)
    tris = [np.stack([np.zeros(columns, int), nxt[0], index[0]], 1)]
    for i in range(rows - 3):
        tris += [np.stack([index[i], nxt[i], nxt[i + 1]], 1), np.stack([index[i], nxt[i + 1], index[i + 1]], 1)]
    tris.append(np.stack([np.full(columns, vertices.shape[0] - 1), index[-1], nxt[-1]], 1))
    return vertices, np.concatenate(tris)[:, ::-1].copy()


def test_sphere_winding_is_kept_and_inverted_winding_is_flipped():
    vertices, triangles = sphere()
    volume = outward_score(vertices, triangles) / 6
    assert volume == pytest.approx(4 / 3 * np.pi * 80 ** 3, rel=0.1)  # the signed volume of a closed mesh
    same, flipped = orient_triangles_outward(vertices, triangles)
    assert not flipped and same is triangles
    fixed, flipped = orient_triangles_outward(vertices, triangles[:, ::-1])
    assert flipped and outward_score(vertices, fixed) == pytest.approx(outward_score(vertices, triangles))


def test_open_face_mask_and_real_surrey_model(tiny_model_data, shared_data):
    tris = tiny_model_data.triangles
    assert not orient_triangles_outward(tiny_model_data.mean_shape, tris)[1]
    assert orient_triangles_outward(tiny_model_data.mean_shape, tris[:, [0, 2, 1]])[1]
    sfm = np.load(shared_data / "sfm" / "sfm_3448.npz")
    mean, triangles = sfm["mean"].reshape(-1, 3), sfm["triangles"]
    assert outward_score(mean, triangles) > 0
    assert orient_triangles_outward(mean, triangles[:, ::-1])[1]


def test_cylindrical_uv_orientation_and_range():
    vertices, _ = sphere()
    front = vertices[:, 2] > 0
    uv = cylindrical_uv(vertices[front])
    assert uv.shape == (front.sum(), 2) and uv.min() == 0 and uv.max() == 1
    x, y = vertices[front, 0], vertices[front, 1]
    for height in np.unique(y):
        row = y == height
        assert np.all(np.diff(uv[row][np.argsort(x[row]), 0]) > 0)  # u grows towards +x (the subject's left)
    np.testing.assert_allclose(uv[:, 1], (y - y.min()) / np.ptp(y))  # v up
    assert cylindrical_uv(np.zeros((4, 3))).max() == 0


def test_head_axis_lies_behind_the_face():
    vertices, _ = sphere()
    center_x, center_z = head_axis(vertices)
    assert center_x == pytest.approx(0, abs=1e-9) and center_z == pytest.approx(0, abs=1e-9)
    center_x, center_z = head_axis(vertices[vertices[:, 2] > 0])
    assert center_z < vertices[:, 2].max()
