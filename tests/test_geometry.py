import numpy as np
import pytest
import torch

from diffface.geometry import VertexNormals, face_normals, vertex_normal_sums, vertex_normals


def _sphere(n_lat=12, n_lon=24):
    """A closed UV sphere with outward CCW triangles."""
    verts = [[0, 0, 1]]
    for i in range(1, n_lat):
        th = np.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * np.pi * j / n_lon
            verts.append([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)])
    verts.append([0, 0, -1])
    faces = []
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
        faces.append([len(verts) - 1, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
    for i in range(1, n_lat - 1):
        for j in range(n_lon):
            a, b, c, d = ring(i, j), ring(i, j + 1), ring(i + 1, j), ring(i + 1, j + 1)
            faces += [[a, c, d], [a, d, b]]
    return torch.tensor(verts, dtype=torch.float64)[None], torch.tensor(faces)


def _reference_vertex_normals(v, f):
    out = np.zeros_like(v)
    for a, b, c in f:
        n = np.cross(v[b] - v[a], v[c] - v[a])
        out[a] += n
        out[b] += n
        out[c] += n
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_sphere_normals_point_outward():
    v, f = _sphere()
    n = vertex_normals(v, f)
    cos = (n[0] * v[0]).sum(-1)
    assert cos.min() > 0.99


def test_vertex_normals_match_loop_reference(dtype):
    g = torch.Generator().manual_seed(0)
    v, f = _sphere(6, 10)
    v = (v + 0.05 * torch.randn(v.shape, generator=g, dtype=torch.float64)).repeat(3, 1, 1)
    ours = vertex_normals(v.to(dtype), f)
    for b in range(3):
        ref = _reference_vertex_normals(v[b].numpy(), f.numpy())
        np.testing.assert_allclose(ours[b].double().numpy(), ref, atol=1e-10 if dtype == torch.float64 else 1e-5)


def test_face_normal_of_ccw_triangle_and_area():
    v = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [0, 3, 0]]])
    f = torch.tensor([[0, 1, 2]])
    torch.testing.assert_close(face_normals(v, f), torch.tensor([[[0.0, 0, 1]]]))
    assert face_normals(v, f, normalize=False).norm() == pytest.approx(6.0)  # twice the area


def test_vertex_normal_sums_are_twice_the_area_weighted_normals():
    """Two triangles around vertex 0: the sum of their (twice-)area-weighted normals, which vertex_normals
    normalises."""
    v = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [0, 3, 0], [0, 0, 1]]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 3, 1]])
    sums = vertex_normal_sums(v, f)
    torch.testing.assert_close(sums[0, 0], torch.tensor([0.0, 2, 6], dtype=torch.float64))  # (0, 0, 6) + (0, 2, 0)
    torch.testing.assert_close(sums[0, 2], torch.tensor([0.0, 0, 6], dtype=torch.float64))
    torch.testing.assert_close(vertex_normals(v, f), sums / sums.norm(dim=-1, keepdim=True))


def test_gradcheck_vertex_normals():
    v, f = _sphere(4, 6)
    v = (v + 0.01).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, f), (v,))


def test_module_and_bad_input(device):
    v, f = _sphere(4, 6)
    module = VertexNormals(f).to(device)
    out = module(v.to(device))
    assert out.shape == v.shape and out.device.type == device.type
    with pytest.raises(ValueError, match="vertices"):
        vertex_normals(v[0], f)
    with pytest.raises(ValueError, match="faces"):
        vertex_normals(v, f[:, :2])
    with pytest.raises(TypeError, match="integer"):
        vertex_normals(v, f.double())
