import pickle

import numpy as np
import pytest

from diffface.loaders import load_any_model
from diffface.loaders.tddfa_pkl import load_tddfa_pkl
from diffface.model_format import ModelFormatError
from diffface.uv import outward_score

UM = 1000.0
pytestmark = pytest.mark.filterwarnings("ignore:.*'w_shp' has unit columns:UserWarning")


def write_tddfa(path, mesh, **overrides):
    """A small 3DDFA BFM pickle: u (3V, 1) µm, orthonormal w_shp, σ-scaled w_exp, tri (3, F), keypoints (204,)."""
    rng = np.random.default_rng(8)
    V = mesh.num_vertices
    w_exp = np.linalg.qr(rng.normal(size=(3 * V, 4)))[0] * np.array([3000.0, 2000, 900, 400])
    content = dict(u=(mesh.vertices.reshape(-1, 1) * UM).astype(np.float32), w_shp=mesh.orthonormal_basis(6, seed=1),
                   w_exp=w_exp.astype(np.float32), tri=mesh.triangles.T.copy(),
                   keypoints=(3 * mesh.landmarks[:, None] + np.arange(3)).reshape(-1))
    content.update(overrides)
    with open(path, "wb") as fh:
        pickle.dump({k: v for k, v in content.items() if v is not None}, fh)
    return content


def write_stats(path, id_std, exp_std):
    with open(path, "wb") as fh:
        pickle.dump({"mean": np.zeros(12 + id_std.size + exp_std.size, np.float32),
                     "std": np.concatenate([np.ones(12), id_std, exp_std]).astype(np.float32)}, fh)


def test_convert_with_param_stats_matches_3ddfa_reconstruction(face_mesh, tmp_path, roundtrip):
    src = write_tddfa(tmp_path / "bfm_noneck_v3.pkl", face_mesh)
    id_coef, exp_coef = np.linspace(6e5, 1e5, 6), np.array([1.5, 1.2, 0.6, 0.3])
    write_stats(tmp_path / "param_mean_std_62d_120x120.pkl", id_coef, exp_coef)
    model = roundtrip(load_any_model(tmp_path / "bfm_noneck_v3.pkl",
                                     param_stats=tmp_path / "param_mean_std_62d_120x120.pkl"))
    assert model.info() == {**model.info(), "id_dims": 6, "exp_dims": 4, "tex_dims": 0, "landmarks": 68,
                            "contour_lines": 16, "has_albedo": False}
    np.testing.assert_array_equal(model.landmark_indices, face_mesh.landmarks)
    # 3DDFA: vertex = u + w_shp @ alpha_shp + w_exp @ alpha_exp, with alpha = z * param_std (µm)
    z_id, z_exp = np.random.default_rng(3).normal(size=6), np.random.default_rng(4).normal(size=4)
    tddfa = src["u"][:, 0] + src["w_shp"] @ (z_id * id_coef) + src["w_exp"] @ (z_exp * exp_coef)
    ours = model.mean_shape + model.id_basis @ (model.id_std * z_id) + model.exp_basis @ (model.exp_std * z_exp)
    np.testing.assert_allclose(ours.reshape(-1), tddfa / UM, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(model.exp_basis.reshape(-1, 4), axis=0), 1, atol=1e-6)
    np.testing.assert_array_equal(model.triangles, face_mesh.triangles)
    assert outward_score(model.mean_shape, model.triangles) > 0


def test_without_stats_std_is_the_column_norm_and_warns(face_mesh, tmp_path):
    src = write_tddfa(tmp_path / "bfm.pkl", face_mesh)
    with pytest.warns(UserWarning, match="bfm.pkl: 'w_shp' has unit columns"):
        model = load_tddfa_pkl(tmp_path / "bfm.pkl")
    np.testing.assert_allclose(model.exp_std, np.array([3000.0, 2000, 900, 400]) / UM, rtol=1e-5)
    np.testing.assert_allclose(model.id_std, np.full(6, 1 / UM), rtol=1e-5)
    assert "id_std_warning" in model.metadata
    truncated = load_tddfa_pkl(tmp_path / "bfm.pkl", id_dims=2, exp_dims=1, param_stats=None)
    assert (truncated.id_dims, truncated.exp_dims) == (2, 1)
    np.testing.assert_array_equal(truncated.mean_shape, (src["u"].reshape(-1, 3) / UM).astype(np.float32))


def test_separate_triangles_one_based_and_vertex_keypoints(face_mesh, tmp_path):
    write_tddfa(tmp_path / "bfm.pkl", face_mesh, tri=np.zeros((3, 2), np.int64) + 10 ** 6,
                keypoints=face_mesh.landmarks.copy())
    with pytest.raises(ModelFormatError, match="bfm.pkl: .*pass triangles=configs/tri.pkl"):
        load_tddfa_pkl(tmp_path / "bfm.pkl")
    with open(tmp_path / "tri.pkl", "wb") as fh:
        pickle.dump(face_mesh.triangles[:, ::-1].T + 1, fh)  # 1-based and clockwise
    with pytest.warns(UserWarning):
        model = load_tddfa_pkl(tmp_path / "bfm.pkl", triangles=tmp_path / "tri.pkl")
    assert model.metadata["triangles_one_based"] and model.metadata["triangles_flipped_to_ccw"]
    np.testing.assert_array_equal(np.sort(model.triangles, 1), np.sort(face_mesh.triangles, 1))
    np.testing.assert_array_equal(model.landmark_indices, face_mesh.landmarks)


def test_code_in_pickles_is_refused(tmp_path):
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return open, (str(marker), "w")

    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"u": Exploit()}, fh)
    with pytest.raises(ModelFormatError, match="evil.pkl: not a readable numpy pickle .*refusing"):
        load_any_model(tmp_path / "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("problem, match", [
    (dict(w_exp=None), "missing w_exp"),
    (dict(w_shp=np.ones((5, 6), np.float32)), "'w_shp' has 5"),
    (dict(keypoints=np.arange(204)[::-1].copy()), "keypoints"),
    (dict(keypoints=np.arange(10)), "204"),
    (dict(w_exp=np.zeros((960, 2), np.float32)), "all-zero columns"),
])
def test_wrong_keys_and_shapes(face_mesh, tmp_path, problem, match):
    write_tddfa(tmp_path / "bad.pkl", face_mesh, **problem)
    with pytest.raises(ModelFormatError, match=match) as info:
        load_tddfa_pkl(tmp_path / "bad.pkl")
    assert "bad.pkl" in str(info.value)


def test_nan_truncated_and_text_files(face_mesh, tmp_path):
    u = (face_mesh.vertices.reshape(-1, 1) * UM).astype(np.float32)
    u[4] = np.nan
    write_tddfa(tmp_path / "nan.pkl", face_mesh, u=u)
    with pytest.raises(ModelFormatError, match="nan.pkl: 'u' contains NaN"):
        load_any_model(tmp_path / "nan.pkl")
    write_tddfa(tmp_path / "good.pkl", face_mesh)
    (tmp_path / "truncated.pkl").write_bytes((tmp_path / "good.pkl").read_bytes()[:5000])
    with pytest.raises(ModelFormatError, match="truncated.pkl: not a readable numpy pickle"):
        load_any_model(tmp_path / "truncated.pkl")
    (tmp_path / "notes.pkl").write_text("plain text\n")
    with pytest.raises(ModelFormatError, match="notes.pkl"):
        load_any_model(tmp_path / "notes.pkl")
    with open(tmp_path / "list.pkl", "wb") as fh:
        pickle.dump([1, 2, 3], fh)
    with pytest.raises(ModelFormatError, match="list.pkl: not a 3DDFA BFM pickle"):
        load_any_model(tmp_path / "list.pkl")
