import json
import zipfile

import numpy as np
import pytest

from diffface.model_format import ModelFormatError, is_canonical_npz, load_model_npz, save_model_npz


def test_roundtrip_exact(tiny_model_data, tmp_path):
    path = save_model_npz(tiny_model_data, tmp_path / "model.npz")
    assert is_canonical_npz(path)
    back = load_model_npz(path)
    for name in ("mean_shape", "id_basis", "exp_std", "albedo_basis", "triangles", "landmark_indices", "contour_lines"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tiny_model_data.canonical(), name))
    assert back.info()["landmarks"] == 68 and back.name == "tiny"
    assert back.triangles.dtype == np.int32 and back.landmark_indices.dtype == np.int64


def test_missing_and_corrupt_files_name_the_file(tmp_path, tiny_model_data):
    with pytest.raises(ModelFormatError, match="nope.npz: no such"):
        load_model_npz(tmp_path / "nope.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(ModelFormatError, match="garbage.npz: not a readable"):
        load_model_npz(garbage)
    truncated = tmp_path / "truncated.npz"
    full = save_model_npz(tiny_model_data, tmp_path / "full.npz").read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(ModelFormatError, match="truncated.npz"):
        load_model_npz(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, mean=np.zeros(3))
    with pytest.raises(ModelFormatError, match="convert-model"):
        load_model_npz(foreign)


def test_validation_errors(tiny_model_data, tmp_path):
    bad = tiny_model_data
    bad.triangles = bad.triangles.copy()
    bad.triangles[0, 0] = 10_000
    with pytest.raises(ModelFormatError, match="triangles index vertices outside"):
        save_model_npz(bad, tmp_path / "x.npz")


@pytest.mark.parametrize("field,value,message", [
    ("id_std", np.ones(2), "id_std must be"),
    ("mean_shape", np.full((40, 3), np.nan), "NaN"),
    ("landmark_indices", np.zeros(67, dtype=int), "landmark_indices must be"),
    ("albedo_mean", np.zeros((3, 3)), "albedo_mean"),
])
def test_validation_names_the_field(tiny_model_data, field, value, message):
    if field == "mean_shape":
        value = np.full_like(tiny_model_data.mean_shape, np.nan)
    setattr(tiny_model_data, field, value)
    with pytest.raises(ModelFormatError, match=message):
        tiny_model_data.validate("m.npz")


def test_newer_version_is_refused(tiny_model_data, tmp_path):
    path = save_model_npz(tiny_model_data, tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(str(arrays["header"]))
    header["version"] = 99
    arrays["header"] = np.array(json.dumps(header))
    np.savez(path, **arrays)
    with pytest.raises(ModelFormatError, match="newer"):
        load_model_npz(path)
    assert zipfile.is_zipfile(path)


@pytest.mark.parametrize("header,message", [("{not json", "its 'header' is not valid JSON"),
                                            ("[1, 2]", "its 'header' is JSON but not an object")])
def test_broken_header_is_named_not_missing(tiny_model_data, tmp_path, header, message):
    """Every way in (the .npz reader, format detection, the model loader) says what is wrong with the header."""
    from diffface.loaders import detect_format
    from diffface.morphable_model import load_morphable_model

    path = save_model_npz(tiny_model_data, tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["header"] = np.array(header)
    np.savez(path, **arrays)
    for load in (load_model_npz, detect_format, load_morphable_model):
        with pytest.raises(ModelFormatError, match=f"m.npz: {message}") as error:
            load(path)
        assert "no 'header'" not in str(error.value) and "\n" not in str(error.value)
