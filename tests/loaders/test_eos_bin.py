import numpy as np
import pytest

from diffface.loaders import load_any_model
from diffface.loaders.eos_bin import load_eos_bin
from diffface.model_format import ModelFormatError
from diffface.uv import outward_score

morphablemodel = None  # eos.morphablemodel, set by _eos: skips without eos-py, fails under DIFFFACE_REQUIRE_OPTIONAL=1


@pytest.fixture(autouse=True, scope="module")
def _eos(optional_import):
    global morphablemodel
    morphablemodel = optional_import("eos", 'pip install "diffface[eos]"  (or: pip install eos-py)').morphablemodel


def pca(mean, basis, eigenvalues, triangles):
    return morphablemodel.PcaModel(mean.astype(np.float32), basis.astype(np.float32),
                                   eigenvalues.astype(np.float32), triangles.tolist())


def write_eos(path, mesh, expression="pca", colour=True, texcoords=True, triangles=None):
    """A small eos model written by eos-py itself; returns it as eos reads it back."""
    rng = np.random.default_rng(5)
    V, tris = mesh.num_vertices, mesh.triangles if triangles is None else triangles
    shape = pca(mesh.vertices.reshape(-1), mesh.orthonormal_basis(6, seed=1), np.array([90, 40, 20, 9, 4, 1.0]), tris)
    colour_model = pca(rng.uniform(0.3, 0.7, 3 * V), mesh.orthonormal_basis(4, seed=2),
                       np.array([0.5, 0.2, 0.1, 0.05]), tris) if colour else morphablemodel.PcaModel()
    uv = rng.uniform(0, 1, (V, 2)).tolist() if texcoords else []
    if expression == "pca":
        expressions = pca(rng.normal(0, 0.5, 3 * V), mesh.orthonormal_basis(3, seed=3), np.array([16, 9, 4.0]), tris)
        model = morphablemodel.MorphableModel(shape, expressions, colour_model, None, uv)
    elif expression == "blendshapes":
        blendshapes = [morphablemodel.Blendshape(name, rng.normal(0, 3, 3 * V).astype(np.float32))
                       for name in ("smile", "frown")]
        model = morphablemodel.MorphableModel(shape, blendshapes, colour_model, None, uv)
    else:
        model = morphablemodel.MorphableModel(shape, colour_model, None, uv)
    morphablemodel.save_model(model, str(path))
    return morphablemodel.load_model(str(path))


def test_pca_expression_model_matches_eos_draw_sample(face_mesh, tmp_path, roundtrip):
    source = write_eos(tmp_path / "small.bin", face_mesh)
    model = roundtrip(load_eos_bin(tmp_path / "small.bin"))
    assert model.info() == {**model.info(), "id_dims": 6, "exp_dims": 3, "tex_dims": 4, "has_albedo": True}
    c_id, c_exp, c_tex = (np.random.default_rng(9).normal(size=n) for n in (6, 3, 4))
    # eos draws with standard-normal coefficients: mean + orthonormal_basis · (sqrt(eigenvalues) * c)
    mesh = source.draw_sample(c_id.tolist(), c_exp.tolist(), c_tex.tolist())
    ours = model.mean_shape + model.id_basis @ (model.id_std * c_id) + model.exp_basis @ (model.exp_std * c_exp)
    np.testing.assert_allclose(ours, np.asarray(mesh.vertices)[:, :3], atol=1e-3)
    albedo = model.albedo_mean + model.albedo_basis @ (model.albedo_std * c_tex)
    np.testing.assert_allclose(albedo, np.asarray(mesh.colors), atol=1e-5)
    texcoords = np.asarray(source.get_texture_coordinates())
    np.testing.assert_allclose(model.uv, np.stack([texcoords[:, 0], 1 - texcoords[:, 1]], 1), atol=1e-7)
    orthonormal = source.get_shape_model().get_orthonormal_pca_basis()
    np.testing.assert_array_equal(model.id_basis, orthonormal.reshape(-1, 3, 6))


def test_blendshapes_inside_and_beside(face_mesh, tmp_path):
    source = write_eos(tmp_path / "with_blendshapes.bin", face_mesh, expression="blendshapes", colour=False)
    model = load_eos_bin(tmp_path / "with_blendshapes.bin")
    offsets = np.stack([b.deformation for b in source.get_expression_model()], 1).reshape(-1, 3, 2)
    np.testing.assert_array_equal(model.exp_basis, offsets)
    assert model.exp_std.tolist() == [1.0, 1.0] and model.metadata["expression_names"] == ["smile", "frown"]
    assert not model.has_albedo and model.tex_dims == 0

    write_eos(tmp_path / "shape_only.bin", face_mesh, expression=None, texcoords=False)
    assert load_eos_bin(tmp_path / "shape_only.bin").exp_dims == 0
    blendshapes = [morphablemodel.Blendshape("open", np.ones(3 * face_mesh.num_vertices, np.float32))]
    morphablemodel.save_blendshapes(blendshapes, str(tmp_path / f"expression_blendshapes_{face_mesh.num_vertices}.bin"))
    beside = load_eos_bin(tmp_path / "shape_only.bin")
    assert beside.exp_dims == 1 and np.all(beside.exp_basis == 1)
    morphablemodel.save_blendshapes(blendshapes, str(tmp_path / "other.bin"))
    assert load_any_model(tmp_path / "shape_only.bin", expression=tmp_path / "other.bin").exp_dims == 1


def test_scale_and_winding(face_mesh, tmp_path):
    face_mesh.vertices = face_mesh.vertices * 1000
    write_eos(tmp_path / "micrometres.bin", face_mesh, triangles=face_mesh.triangles[:, ::-1])
    model = load_eos_bin(tmp_path / "micrometres.bin", scale_to_mm=1e-3)
    with pytest.warns(UserWarning, match="micrometres.bin: the converted mean shape spans .* check the length unit"):
        unscaled = load_eos_bin(tmp_path / "micrometres.bin")
    np.testing.assert_allclose(model.mean_shape, unscaled.mean_shape * 1e-3, rtol=1e-6)
    np.testing.assert_allclose(model.id_std, unscaled.id_std * 1e-3, rtol=1e-6)
    np.testing.assert_allclose(model.exp_std, unscaled.exp_std * 1e-3, rtol=1e-6)
    assert model.metadata["triangles_flipped_to_ccw"] and outward_score(model.mean_shape, model.triangles) > 0


def test_bad_files_name_the_file(face_mesh, tmp_path):
    text = tmp_path / "notes.bin"
    text.write_text("this is a text file, not a model\n")
    with pytest.raises(ModelFormatError, match="notes.bin: not a readable eos model"):
        load_any_model(text)
    write_eos(tmp_path / "full.bin", face_mesh)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes((tmp_path / "full.bin").read_bytes()[:2000])
    with pytest.raises(ModelFormatError, match="truncated.bin"):
        load_eos_bin(truncated)
    with pytest.raises(ModelFormatError, match="full.bin: already has an expression model"):
        load_eos_bin(tmp_path / "full.bin", expression=text)
    write_eos(tmp_path / "shape_only.bin", face_mesh, expression=None)
    with pytest.raises(ModelFormatError, match="notes.bin: not a readable eos blendshapes"):
        load_eos_bin(tmp_path / "shape_only.bin", expression=text)
    with pytest.raises(ModelFormatError, match="missing.bin: no such"):
        load_eos_bin(tmp_path / "missing.bin")


def test_real_surrey_npz_and_bin_agree(shared_data, roundtrip):
    folder = shared_data / "sfm"
    from_npz = load_any_model(folder / "sfm_3448.npz")
    from_bin = roundtrip(load_any_model(folder / "sfm_shape_3448.bin"))
    for model in (from_npz, from_bin):
        assert (model.num_vertices, model.id_dims, model.exp_dims, model.num_landmarks) == (3448, 63, 6, 68)
        assert np.argmax(model.mean_shape[model.landmark_indices, 2]) == 30  # the nose tip
        assert outward_score(model.mean_shape, model.triangles) > 0 and not model.metadata["triangles_flipped_to_ccw"]
    for name in ("mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "uv"):
        np.testing.assert_allclose(getattr(from_bin, name), getattr(from_npz, name), atol=1e-5, err_msg=name)
    for name in ("triangles", "landmark_indices", "contour_landmarks", "contour_lines"):
        np.testing.assert_array_equal(getattr(from_bin, name), getattr(from_npz, name), err_msg=name)
    assert from_bin.metadata["expression_names"] == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
