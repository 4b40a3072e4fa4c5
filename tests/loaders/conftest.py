"""Fixtures for the loader tests: a small synthetic face mesh that each test writes in a source format."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
import pytest


@dataclass
class FaceMesh:
    """A face-like open surface in millimetres (+y up, +z towards the viewer), CCW from outside."""

    vertices: np.ndarray  # (V, 3) float64
    triangles: np.ndarray  # (F, 3) int64, 0-based
    landmarks: np.ndarray  # (68,) int64, distinct vertices
    columns: int  # the grid's width: vertex (row i, column j) is i * columns + j, rows bottom to top

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    def orthonormal_basis(self, modes: int, seed: int) -> np.ndarray:
        """Random orthonormal columns, (3V, modes) float32."""
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3 * self.num_vertices, modes)))
        return q.astype(np.float32)


def make_face_mesh(columns: int = 20, rows: int = 16, seed: int = 0) -> FaceMesh:
    azimuth = np.deg2rad(np.linspace(-100, 100, columns))
    heights = np.linspace(-90, 110, rows)
    theta, y = np.meshgrid(azimuth, heights)  # row i: height, column j: azimuth (towards +x)
    radius = 75 + 8 * np.exp(-theta ** 2 / 0.05 - (y - 10) ** 2 / 400)  # a nose bump
    vertices = np.stack([radius * np.sin(theta), y, radius * np.cos(theta) - 90], -1).reshape(-1, 3)
    index = np.arange(rows * columns).reshape(rows, columns)
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, :-1].ravel(), index[1:, 1:].ravel()
    triangles = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    landmarks = np.random.default_rng(seed).choice(rows * columns, 68, replace=False)
    return FaceMesh(vertices, triangles.astype(np.int64), landmarks.astype(np.int64), columns)


@pytest.fixture
def face_mesh() -> FaceMesh:
    return make_face_mesh()


ARRAY_FIELDS = ("mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "albedo_mean", "albedo_basis",
                "albedo_std", "triangles", "uv", "landmark_indices", "contour_landmarks", "contour_lines")


@pytest.fixture
def roundtrip(tmp_path):
    """Save a converted model with ``save_model_npz``, reload it, check every array is bit-identical."""
    from diffface.model_format import load_model_npz, save_model_npz

    def run(model):
        back = load_model_npz(save_model_npz(model, tmp_path / "converted.npz"))
        for name in ARRAY_FIELDS:
            np.testing.assert_array_equal(getattr(back, name), getattr(model, name), err_msg=name)
            assert getattr(back, name).dtype == getattr(model, name).dtype, name
        assert (back.has_albedo, back.name, back.metadata) == (model.has_albedo, model.name, model.metadata)
        return back

    return run



class Deep3DExpressionFiles:
    """Writes ``Exp_Pca.bin`` the way its layout is documented, and reads it back with Deep3DFaceRecon's code."""

    @staticmethod
    def write(path, mean: np.ndarray, pc: np.ndarray) -> None:
        """int32 exp_dim, float32 expMU (3V), float32 expPC mode-major (exp_dim x 3V)."""
        with open(path, "wb") as fh:
            array("i", [pc.shape[1]]).tofile(fh)
            array("f", mean.astype(np.float32).tolist()).tofile(fh)
            array("f", pc.T.astype(np.float32).reshape(-1).tolist()).tofile(fh)

    @staticmethod
    def load_exp_basis(path, n_vertex: int) -> tuple[np.ndarray, np.ndarray]:
        """``LoadExpBasis`` of Deep3DFaceRecon's util/load_mats.py with the vertex count as an argument:
        ``(expMU (3V,), expPC (3V, exp_dim))``."""
        with open(path, "rb") as fh:
            exp_dim = array("i")
            exp_dim.fromfile(fh, 1)
            exp_mu, exp_pc = array("f"), array("f")
            exp_mu.fromfile(fh, 3 * n_vertex)
            exp_pc.fromfile(fh, 3 * exp_dim[0] * n_vertex)
        return np.array(exp_mu), np.transpose(np.reshape(np.array(exp_pc), [exp_dim[0], -1]))


@pytest.fixture
def deep3d_files() -> type[Deep3DExpressionFiles]:
    return Deep3DExpressionFiles
