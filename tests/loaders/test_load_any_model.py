import inspect

import numpy as np
import pytest

from diffface.loaders import FORMATS, detect_format, load_any_model
from diffface.model_format import ModelFormatError, save_model_npz


def test_registry_names_and_signatures():
    assert set(FORMATS) == {"diffface", "sfm-npz", "eos", "bfm2009", "bfm2017", "3ddfa"}
    for loader in FORMATS.values():
        assert next(iter(inspect.signature(loader).parameters)) == "path"


def test_canonical_npz_is_detected_and_read_back(tiny_model_data, tmp_path):
    path = save_model_npz(tiny_model_data, tmp_path / "model.npz")
    assert detect_format(path) == "diffface"
    model = load_any_model(path, landmarks=None)
    np.testing.assert_array_equal(model.mean_shape, tiny_model_data.canonical().mean_shape)
    with pytest.raises(ModelFormatError, match="model.npz: option.s. landmarks do not apply to diffface"):
        load_any_model(path, landmarks=tmp_path / "marks.txt")


@pytest.mark.parametrize("name, expected", [
    ("a.mat", "bfm2009"), ("b.H5", "bfm2017"), ("c.hdf5", "bfm2017"), ("d.pkl", "3ddfa"), ("e.bin", "eos")])
def test_detection_by_extension(tmp_path, name, expected):
    (tmp_path / name).write_bytes(b"x")
    assert detect_format(tmp_path / name) == expected


def test_unknown_missing_and_partial_files(tmp_path):
    (tmp_path / "face.obj").write_text("v 0 0 0\n")
    with pytest.raises(ModelFormatError, match="face.obj: unknown model file extension '.obj'; supported formats"):
        load_any_model(tmp_path / "face.obj")
    with pytest.raises(ModelFormatError, match="absent.mat: no such model file"):
        load_any_model(tmp_path / "absent.mat")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ModelFormatError, match="other.npz: an .npz that is neither .* found weights"):
        load_any_model(tmp_path / "other.npz")
    (tmp_path / "garbage.npz").write_bytes(b"garbage")
    with pytest.raises(ModelFormatError, match="garbage.npz: not a readable .npz"):
        load_any_model(tmp_path / "garbage.npz")
    (tmp_path / "expression_blendshapes_3448.bin").write_bytes(b"x")
    with pytest.raises(ModelFormatError, match="blendshapes file, not a whole model"):
        load_any_model(tmp_path / "expression_blendshapes_3448.bin")
    (tmp_path / "model.mat").write_text("hello")
    with pytest.raises(ModelFormatError, match="model.mat: unknown format 'obj'; supported formats"):
        load_any_model(tmp_path / "model.mat", format="obj")
    with pytest.raises(ModelFormatError, match="model.mat: option.s. expression_std do not apply to bfm2017"):
        load_any_model(tmp_path / "model.mat", format="bfm2017", expression_std="std_exp.txt")
    with pytest.raises(ModelFormatError, match="model.mat: not a readable MATLAB"):
        load_any_model(tmp_path / "model.mat")


def test_format_override_reads_renamed_files(shared_data, tmp_path):
    renamed = tmp_path / "surrey.bin"
    renamed.write_bytes((shared_data / "sfm" / "sfm_3448.npz").read_bytes())
    model = load_any_model(renamed, format="sfm-npz", landmarks=shared_data / "sfm" / "ibug_to_sfm.txt",
                           contours=shared_data / "sfm" / "sfm_model_contours.json")
    assert model.num_landmarks == 68 and model.num_vertices == 3448


@pytest.mark.parametrize("module, name, install", [("eos", "model.bin", "pip install eos-py"),
                                                   ("h5py", "model.h5", "pip install h5py")])
def test_missing_optional_reader_names_the_install_command(tmp_path, monkeypatch, module, name, install):
    (tmp_path / name).write_bytes(b"x")
    monkeypatch.setitem(__import__("sys").modules, module, None)  # makes `import module` fail
    with pytest.raises(ImportError, match=install):
        load_any_model(tmp_path / name)
