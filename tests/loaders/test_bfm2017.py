import numpy as np
import pytest

from diffface.loaders import load_any_model
from diffface.loaders.bfm2017 import load_bfm2017
from diffface.model_format import ModelFormatError
from diffface.uv import outward_score

h5py = None  # set by _h5py: skips without it, fails under DIFFFACE_REQUIRE_OPTIONAL=1 (CI)


@pytest.fixture(autouse=True, scope="module")
def _h5py(optional_import):
    global h5py
    h5py = optional_import("h5py", 'pip install "diffface[formats]"  (or: pip install h5py)')


def write_bfm2017(path, mesh, colour=True, expression=True, **overrides):
    """A small statismo .h5 of BFM 2017's layout: mm, orthonormal pcaBasis, pcaVariance, cells (3, F)."""
    rng = np.random.default_rng(6)
    V = mesh.num_vertices
    datasets = {
        "shape/model/mean": mesh.vertices.reshape(-1).astype(np.float32),
        "shape/model/pcaBasis": mesh.orthonormal_basis(9, seed=1),
        "shape/model/pcaVariance": np.linspace(3000, 20, 9).astype(np.float32),
        "shape/representer/points": mesh.vertices.T.astype(np.float32),
        "shape/representer/cells": mesh.triangles.T.astype(np.uint32),
    }
    if expression:
        datasets.update({"expression/model/mean": rng.normal(0, 0.5, 3 * V).astype(np.float32),
                         "expression/model/pcaBasis": mesh.orthonormal_basis(4, seed=2),
                         "expression/model/pcaVariance": np.array([400, 200, 90, 10], np.float32)})
    if colour:
        datasets.update({"color/model/mean": rng.uniform(0.3, 0.8, 3 * V).astype(np.float32),
                         "color/model/pcaBasis": mesh.orthonormal_basis(3, seed=3),
                         "color/model/pcaVariance": np.array([4.0, 1.0, 0.5], np.float32)})
    datasets.update(overrides)
    with h5py.File(path, "w") as h5:
        for name, value in datasets.items():
            if value is not None:
                h5.create_dataset(name, data=value)
    return datasets


def test_convert_roundtrip_and_statismo_formula(face_mesh, tmp_path, roundtrip):
    src = write_bfm2017(tmp_path / "model2017-1_bfm_nomouth.h5", face_mesh)
    model = roundtrip(load_any_model(tmp_path / "model2017-1_bfm_nomouth.h5"))
    assert model.info() == {**model.info(), "vertices": face_mesh.num_vertices, "id_dims": 9, "exp_dims": 4,
                            "tex_dims": 3, "has_albedo": True}
    rng = np.random.default_rng(2)
    a, e, t = rng.normal(size=9), rng.normal(size=4), rng.normal(size=3)
    # scalismo/eos: shape = mean + U·(sqrt(var)*a) + exp_mean + U_exp·(sqrt(var_exp)*e), colour likewise
    statismo = (src["shape/model/mean"] + src["shape/model/pcaBasis"] @ (np.sqrt(src["shape/model/pcaVariance"]) * a)
                + src["expression/model/mean"]
                + src["expression/model/pcaBasis"] @ (np.sqrt(src["expression/model/pcaVariance"]) * e))
    ours = model.mean_shape + model.id_basis @ (model.id_std * a) + model.exp_basis @ (model.exp_std * e)
    np.testing.assert_allclose(ours.reshape(-1), statismo, atol=1e-4)
    colour = src["color/model/mean"] + src["color/model/pcaBasis"] @ (np.sqrt(src["color/model/pcaVariance"]) * t)
    albedo = model.albedo_mean + model.albedo_basis @ (model.albedo_std * t)
    np.testing.assert_allclose(albedo.reshape(-1), colour, atol=1e-5)
    np.testing.assert_array_equal(model.triangles, face_mesh.triangles)  # cells are (3, F), 0-based, CCW here
    assert not model.metadata["triangles_flipped_to_ccw"] and model.metadata["expression_mean_included"]


def test_options_and_optional_groups(face_mesh, tmp_path):
    write_bfm2017(tmp_path / "face.h5", face_mesh, colour=False, expression=False,
                  **{"shape/representer/cells": face_mesh.triangles[:, ::-1].T.astype(np.uint32)})
    model = load_bfm2017(tmp_path / "face.h5")
    assert (model.has_albedo, model.exp_dims, model.tex_dims) == (False, 0, 0)
    assert model.metadata["triangles_flipped_to_ccw"] and outward_score(model.mean_shape, model.triangles) > 0
    write_bfm2017(tmp_path / "full.h5", face_mesh)
    plain = load_bfm2017(tmp_path / "full.h5", expression_mean=False)
    np.testing.assert_array_equal(plain.mean_shape, face_mesh.vertices.astype(np.float32))
    (tmp_path / "marks.txt").write_text("\n".join(map(str, face_mesh.landmarks)))
    assert load_any_model(tmp_path / "full.h5", landmarks=tmp_path / "marks.txt").num_landmarks == 68


@pytest.mark.parametrize("problem, match", [
    ({"shape/model/pcaBasis": None}, "no dataset 'shape/model/pcaBasis'"),
    ({"shape/model/pcaVariance": np.ones(4, np.float32)}, "pcaVariance' must have shape"),
    ({"shape/representer/cells": np.zeros((4, 2), np.uint32)}, "cells' must have shape"),
    ({"shape/representer/cells": np.full((3, 1), 10 ** 6, np.uint32)}, "indexes vertices outside"),
    ({"color/model/mean": np.ones(12, np.float32)}, "color/model/mean' has 12"),
    ({"shape/model/pcaVariance": -np.ones(9, np.float32)}, "must not be negative"),
])
def test_wrong_layout(face_mesh, tmp_path, problem, match):
    write_bfm2017(tmp_path / "bad.h5", face_mesh, **problem)
    with pytest.raises(ModelFormatError, match=match) as info:
        load_any_model(tmp_path / "bad.h5")
    assert "bad.h5" in str(info.value)


def test_nan_truncated_and_text_files(face_mesh, tmp_path):
    mean = face_mesh.vertices.reshape(-1).astype(np.float32)
    mean[3] = np.nan
    write_bfm2017(tmp_path / "nan.h5", face_mesh, **{"shape/model/mean": mean})
    with pytest.raises(ModelFormatError, match="nan.h5: 'shape/model/mean' contains NaN"):
        load_bfm2017(tmp_path / "nan.h5")
    write_bfm2017(tmp_path / "good.h5", face_mesh)
    (tmp_path / "truncated.h5").write_bytes((tmp_path / "good.h5").read_bytes()[:4000])
    with pytest.raises(ModelFormatError, match="truncated.h5"):
        load_any_model(tmp_path / "truncated.h5")
    (tmp_path / "notes.h5").write_text("not HDF5\n")
    with pytest.raises(ModelFormatError, match="notes.h5: not a readable HDF5"):
        load_any_model(tmp_path / "notes.h5")
