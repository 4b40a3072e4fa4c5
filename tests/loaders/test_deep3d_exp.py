import numpy as np
import pytest
import scipy.io

from diffface.loaders import add_expression, load_any_model, read_exp_pca_bin, read_vertex_index
from diffface.model_format import ModelFormatError


def write_exp_pca(folder, files, num_vertices, modes, seed=0, std=True):
    rng = np.random.default_rng(seed)
    mean, pc = rng.normal(size=3 * num_vertices), rng.normal(size=(3 * num_vertices, modes))
    path = folder / "Exp_Pca.bin"
    files.write(path, mean, pc)
    if std:
        np.savetxt(folder / "std_exp.txt", np.linspace(3, 1, modes))
    return path, mean.astype(np.float32), pc.astype(np.float32)


@pytest.mark.parametrize("num_vertices, modes", [(50, 3), (7, 1), (301, 12)])
def test_layout_matches_deep3d_reader(tmp_path, deep3d_files, num_vertices, modes):
    path, mean, pc = write_exp_pca(tmp_path, deep3d_files, num_vertices, modes)
    basis = read_exp_pca_bin(path)
    ref_mean, ref_pc = deep3d_files.load_exp_basis(path, num_vertices)
    np.testing.assert_array_equal(basis.basis.reshape(-1, modes), ref_pc)
    np.testing.assert_array_equal(basis.basis.reshape(-1, modes), pc)
    np.testing.assert_allclose(basis.mean_offset.reshape(-1), ref_mean.astype(np.float64) * 1e-3, rtol=1e-12)
    np.testing.assert_allclose(basis.std, np.linspace(3, 1, modes) * 1e-3)
    assert basis.num_vertices == num_vertices


def test_bad_files(tmp_path, deep3d_files):
    path, _, _ = write_exp_pca(tmp_path, deep3d_files, 40, 3)
    raw = path.read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-8])
    with pytest.raises(ModelFormatError, match="cut.bin: size .* truncated"):
        read_exp_pca_bin(tmp_path / "cut.bin", std=tmp_path / "std_exp.txt")
    (tmp_path / "wrong_dim.bin").write_bytes(np.int32(5).tobytes() + raw[4:])
    with pytest.raises(ModelFormatError, match="wrong_dim.bin"):
        read_exp_pca_bin(tmp_path / "wrong_dim.bin", std=tmp_path / "std_exp.txt")
    (tmp_path / "tiny.bin").write_bytes(b"ab")
    with pytest.raises(ModelFormatError, match="tiny.bin: only 2 bytes"):
        read_exp_pca_bin(tmp_path / "tiny.bin")
    np.savetxt(tmp_path / "short_std.txt", [1.0, 2.0])
    with pytest.raises(ModelFormatError, match="short_std.txt: 'std_exp' must have shape"):
        read_exp_pca_bin(path, std=tmp_path / "short_std.txt")
    nan = np.frombuffer(raw, np.uint8).copy()
    nan[8:12] = np.frombuffer(np.float32(np.nan).tobytes(), np.uint8)
    (tmp_path / "nan.bin").write_bytes(nan.tobytes())
    with pytest.raises(ModelFormatError, match="nan.bin: 'expMU' contains NaN"):
        read_exp_pca_bin(tmp_path / "nan.bin", std=tmp_path / "std_exp.txt")
    bare = tmp_path / "bare"
    bare.mkdir()
    no_std, _, _ = write_exp_pca(bare, deep3d_files, 10, 2, std=False)
    with pytest.raises(ModelFormatError, match="Exp_Pca.bin: needs its per-mode standard deviations"):
        read_exp_pca_bin(no_std)
    with pytest.raises(ModelFormatError, match="expression basis, not a whole model"):
        load_any_model(path)


def test_add_to_model_on_same_vertices_and_vertex_index_files(tiny_model_data, tmp_path, deep3d_files):
    V = tiny_model_data.num_vertices
    path, _, pc = write_exp_pca(tmp_path, deep3d_files, V, 2)
    basis = read_exp_pca_bin(path)
    model = add_expression(tiny_model_data.canonical(), basis, path=path)
    assert model.exp_dims == 2 and model.num_vertices == V
    np.testing.assert_array_equal(model.exp_basis, pc.reshape(V, 3, 2))
    with pytest.raises(ModelFormatError, match="Exp_Pca.bin: vertex index must list"):
        add_expression(tiny_model_data.canonical(), basis, np.zeros(V, np.int64), path=path)
    scipy.io.savemat(tmp_path / "idx.mat", {"trimIndex": np.arange(1, 6).reshape(-1, 1)})
    np.testing.assert_array_equal(read_vertex_index(tmp_path / "idx.mat"), np.arange(5))
    np.savetxt(tmp_path / "idx.txt", np.arange(4))
    np.testing.assert_array_equal(read_vertex_index(tmp_path / "idx.txt"), np.arange(4))
    scipy.io.savemat(tmp_path / "other.mat", {"idx": np.arange(3)})
    with pytest.raises(ModelFormatError, match="other.mat: has no 'trimIndex'"):
        read_vertex_index(tmp_path / "other.mat")


def test_bfm2009_without_vertex_map_explains_where_it_comes_from():
    from types import SimpleNamespace

    from diffface.loaders import ExpressionBasis

    basis = ExpressionBasis(np.zeros((53215, 3)), np.zeros((53215, 3, 1)), np.ones(1), "Exp_Pca.bin")
    with pytest.raises(ModelFormatError, match="Exp_Pca.bin: .*BFM_exp_idx.mat \\('trimIndex'\\), which ships only "
                                               "with Deep3DFaceRecon"):
        add_expression(SimpleNamespace(num_vertices=53490), basis, path="Exp_Pca.bin")
