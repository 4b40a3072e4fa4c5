import numpy as np
import pytest
import scipy.io

from diffface.loaders import load_any_model
from diffface.loaders.bfm2009 import load_bfm2009
from diffface.model_format import ModelFormatError
from diffface.uv import outward_score

UM = 1000.0  # BFM 2009 stores micrometres


def write_bfm2009(path, mesh, **overrides):
    """A small ``01_MorphableModel.mat`` of BFM 2009's layout: µm, 1-based clockwise ``tl``, [0, 255] colour."""
    rng = np.random.default_rng(4)
    V = mesh.num_vertices
    variables = dict(
        shapeMU=(mesh.vertices.reshape(-1, 1) * UM).astype(np.float32), shapePC=mesh.orthonormal_basis(8, seed=1),
        shapeEV=(np.linspace(60, 5, 8) * UM).astype(np.float32).reshape(-1, 1),
        texMU=rng.uniform(40, 220, (3 * V, 1)).astype(np.float32), texPC=mesh.orthonormal_basis(5, seed=2),
        texEV=np.linspace(900, 100, 5).astype(np.float32).reshape(-1, 1),
        tl=(mesh.triangles[:, [0, 2, 1]] + 1).astype(np.float64))  # clockwise from outside, as BFM ships it
    variables.update(overrides)
    scipy.io.savemat(path, {k: v for k, v in variables.items() if v is not None})
    return variables


def test_convert_roundtrip_units_std_and_winding(face_mesh, tmp_path, roundtrip):
    src = write_bfm2009(tmp_path / "01_MorphableModel.mat", face_mesh)
    model = roundtrip(load_any_model(tmp_path / "01_MorphableModel.mat"))
    V = face_mesh.num_vertices
    assert model.info() == {**model.info(), "vertices": V, "id_dims": 8, "exp_dims": 0, "tex_dims": 5,
                            "landmarks": 0, "has_albedo": True}
    np.testing.assert_allclose(model.mean_shape, face_mesh.vertices, atol=1e-4)  # µm -> mm
    np.testing.assert_array_equal(model.id_basis, src["shapePC"].reshape(V, 3, 8))
    c, t = np.random.default_rng(0).normal(size=8), np.random.default_rng(1).normal(size=5)
    bfm_um = src["shapeMU"][:, 0] + src["shapePC"] @ (src["shapeEV"][:, 0] * c)  # shapeEV: standard deviations
    ours = model.mean_shape + model.id_basis @ (model.id_std * c)
    np.testing.assert_allclose(ours.reshape(-1), bfm_um / UM, atol=1e-4)
    bfm_colour = src["texMU"][:, 0] + src["texPC"] @ (src["texEV"][:, 0] * t)
    albedo = model.albedo_mean + model.albedo_basis @ (model.albedo_std * t)
    np.testing.assert_allclose(albedo.reshape(-1), bfm_colour / 255, atol=1e-5)
    assert model.metadata["triangles_flipped_to_ccw"] and outward_score(model.mean_shape, model.triangles) > 0
    np.testing.assert_array_equal(np.sort(model.triangles, 1), np.sort(face_mesh.triangles, 1))
    assert model.uv.min() >= 0 and model.uv.max() <= 1


def test_landmarks_and_no_texture(face_mesh, tmp_path):
    write_bfm2009(tmp_path / "shape_only.mat", face_mesh, texMU=None, texPC=None, texEV=None)
    np.save(tmp_path / "marks.npy", face_mesh.landmarks)
    model = load_bfm2009(tmp_path / "shape_only.mat", landmarks=tmp_path / "marks.npy")
    assert not model.has_albedo and model.tex_dims == 0
    np.testing.assert_array_equal(model.landmark_indices, face_mesh.landmarks)
    assert model.contour_lines.shape[0] == 16 and np.all(model.contour_lines[:, 0] >= 0)


def test_expression_basis_with_vertex_map(face_mesh, tmp_path, deep3d_files):
    """Deep3DFaceRecon's transferBFM09: idBase = shapePC*shapeEV/1e5, exBase = expPC*expEV/1e5 (decimetres)."""
    src = write_bfm2009(tmp_path / "01_MorphableModel.mat", face_mesh)
    V = face_mesh.num_vertices
    kept = np.arange(face_mesh.columns, V)  # the basis lacks the bottom row, like Guo et al.'s 53215 of 53490
    rng = np.random.default_rng(7)
    exp_pc = np.linalg.qr(rng.normal(size=(3 * kept.size, 4)))[0]
    exp_mu = rng.normal(0, 500, 3 * kept.size)
    deep3d_files.write(tmp_path / "Exp_Pca.bin", exp_mu, exp_pc)
    exp_ev = np.array([900.0, 500, 200, 80])
    np.savetxt(tmp_path / "std_exp.txt", exp_ev)
    scipy.io.savemat(tmp_path / "BFM_exp_idx.mat", {"trimIndex": (kept + 1.0).reshape(-1, 1)})
    np.save(tmp_path / "marks.npy", face_mesh.landmarks)
    model = load_bfm2009(tmp_path / "01_MorphableModel.mat", expression=tmp_path / "Exp_Pca.bin",
                         expression_index=tmp_path / "BFM_exp_idx.mat", landmarks=tmp_path / "marks.npy")
    assert (model.num_vertices, model.exp_dims) == (kept.size, 4)
    assert model.triangles.shape[0] == face_mesh.triangles.shape[0] - 2 * (face_mesh.columns - 1)
    assert outward_score(model.mean_shape, model.triangles) > 0
    remapped = np.searchsorted(kept, face_mesh.landmarks)
    expected_marks = np.where(np.isin(face_mesh.landmarks, kept), remapped, -1)
    np.testing.assert_array_equal(model.landmark_indices, expected_marks)

    _, pc = deep3d_files.load_exp_basis(tmp_path / "Exp_Pca.bin", kept.size)
    mean_dm = (src["shapeMU"].reshape(-1, 3) / 1e5)[kept]
    id_dm = (src["shapePC"] * src["shapeEV"].reshape(-1, 8) / 1e5).reshape(-1, 3, 8)[kept]
    ex_dm = (pc * exp_ev.reshape(-1, 4) / 1e5).reshape(-1, 3, 4)
    alpha, beta = rng.normal(size=8), rng.normal(size=4)
    deep3d_mm = (mean_dm + id_dm @ alpha + ex_dm @ beta) * 100
    ours = model.mean_shape + model.id_basis @ (model.id_std * alpha) + model.exp_basis @ (model.exp_std * beta)
    np.testing.assert_allclose(ours, deep3d_mm, atol=1e-4)
    assert not model.metadata["expression_mean_included"]
    with_mean = load_bfm2009(tmp_path / "01_MorphableModel.mat", expression=tmp_path / "Exp_Pca.bin",
                             expression_index=tmp_path / "BFM_exp_idx.mat", expression_mean=True)
    np.testing.assert_allclose(with_mean.mean_shape - model.mean_shape, exp_mu.reshape(-1, 3) / UM, atol=1e-5)

    with pytest.raises(ModelFormatError, match="Exp_Pca.bin: expression basis has .* pass expression_index"):
        load_bfm2009(tmp_path / "01_MorphableModel.mat", expression=tmp_path / "Exp_Pca.bin")


@pytest.mark.parametrize("problem, match", [
    (dict(shapePC=None), "missing shapePC"),
    (dict(shapeEV=np.ones((5, 1), np.float32)), "shapeEV"),
    (dict(shapeMU=np.ones((10, 1), np.float32)), "'shapePC' has"),
    (dict(tl=np.array([[1, 2, 99999.0]])), "'tl' .1-based. indexes vertices outside"),
    (dict(tl=np.array([[0, 1, 2.0]])), "'tl' .1-based."),
    (dict(texEV=np.ones((2, 1), np.float32)), "texEV"),
    (dict(shapeEV=-np.ones((8, 1), np.float32)), "standard deviations and must not be negative"),
])
def test_wrong_keys_and_shapes(face_mesh, tmp_path, problem, match):
    write_bfm2009(tmp_path / "bfm.mat", face_mesh, **problem)
    with pytest.raises(ModelFormatError, match=match) as info:
        load_any_model(tmp_path / "bfm.mat")
    assert "bfm.mat" in str(info.value)


def test_nan_truncated_and_text_files(face_mesh, tmp_path):
    mean = (face_mesh.vertices.reshape(-1, 1) * UM).astype(np.float32)
    mean[5] = np.nan
    write_bfm2009(tmp_path / "nan.mat", face_mesh, shapeMU=mean)
    with pytest.raises(ModelFormatError, match="nan.mat: 'shapeMU' contains NaN"):
        load_any_model(tmp_path / "nan.mat")
    write_bfm2009(tmp_path / "good.mat", face_mesh)
    (tmp_path / "truncated.mat").write_bytes((tmp_path / "good.mat").read_bytes()[:3000])
    with pytest.raises(ModelFormatError, match="truncated.mat"):
        load_any_model(tmp_path / "truncated.mat")
    (tmp_path / "readme.mat").write_text("This is not a MATLAB file.\n" * 20)
    with pytest.raises(ModelFormatError, match="readme.mat: not a readable MATLAB"):
        load_any_model(tmp_path / "readme.mat")
