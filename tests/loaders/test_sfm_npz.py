import json

import numpy as np
import pytest

from diffface.loaders import load_any_model
from diffface.loaders.sfm_npz import load_sfm_npz
from diffface.model_format import ModelFormatError
from diffface.uv import outward_score

NAMES = np.array(["anger", "smile", "surprise"])


def write_sfm(folder, mesh, side_files=True, **overrides):
    """A small Surrey-layout .npz (eos' conventions: texcoords v down) plus its TOML/JSON side files."""
    rng = np.random.default_rng(1)
    V = mesh.num_vertices
    arrays = dict(
        mean=mesh.vertices.astype(np.float32).reshape(-1), shape_basis=mesh.orthonormal_basis(7, seed=2),
        shape_eigenvalues=np.sort(rng.uniform(10, 900, 7)).astype(np.float32)[::-1].copy(),
        triangles=mesh.triangles.astype(np.int32),
        expression_blendshapes=rng.normal(0, 2, (3 * V, 3)).astype(np.float32),
        expression_names=NAMES, texcoords=rng.uniform(0, 1, (V, 2)).astype(np.float32))
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = folder / "sfm_small.npz"
    np.savez(path, **arrays)
    if side_files:
        lines = ["[landmark_mappings]"] + [f"{n + 1} = {mesh.landmarks[n]}" for n in range(68)
                                           if n not in range(0, 8) and n not in range(9, 17) and n not in (60, 64)]
        lines += ["[contour_landmarks]", "right = [1, 2, 3, 4, 5, 6, 7, 8]", "left = [10, 11, 12, 13, 14, 15, 16, 17]"]
        (folder / "ibug_to_sfm.txt").write_text("\n".join(lines) + "\n")
        (folder / "sfm_model_contours.json").write_text(json.dumps({"model_contour": outlines(mesh)}))
    return path, arrays


def outlines(mesh):
    """The left- and rightmost column of the grid, top to bottom, as eos' contour file lists them."""
    index = np.arange(mesh.num_vertices).reshape(-1, mesh.columns)[::-1]
    return {"right_contour": index[:, 0].tolist(), "left_contour": index[:, -1].tolist()}


def test_convert_roundtrip_and_formulas(face_mesh, tmp_path, roundtrip):
    path, src = write_sfm(tmp_path, face_mesh)
    model = roundtrip(load_sfm_npz(path))
    V = face_mesh.num_vertices
    assert model.info() == {**model.info(), "vertices": V, "id_dims": 7, "exp_dims": 3, "tex_dims": 0, "landmarks": 68}
    np.testing.assert_array_equal(model.mean_shape, src["mean"].reshape(V, 3))
    np.testing.assert_array_equal(model.id_basis, src["shape_basis"].reshape(V, 3, 7))
    np.testing.assert_array_equal(model.exp_std, np.ones(3, np.float32))
    np.testing.assert_allclose(model.id_std, np.sqrt(src["shape_eigenvalues"]), rtol=1e-7)
    # S = mean + basis · α with α ~ N(0, std²) is eos' mean + basis · (sqrt(eigenvalue) * c), c ~ N(0, 1)
    c, psi = np.random.default_rng(3).normal(size=7), np.array([0.5, 1.0, 0.2])
    eos_sample = src["mean"] + src["shape_basis"] @ (np.sqrt(src["shape_eigenvalues"]) * c) \
        + src["expression_blendshapes"] @ psi
    ours = model.mean_shape + model.id_basis @ (model.id_std * c) + model.exp_basis @ (model.exp_std * psi)
    np.testing.assert_allclose(ours.reshape(-1), eos_sample, atol=1e-3)
    np.testing.assert_array_equal(model.uv[:, 1], (1 - src["texcoords"][:, 1]).astype(np.float32))
    assert model.metadata["expression_names"] == NAMES.tolist()
    assert not model.has_albedo and np.ptp(model.albedo_mean, axis=0).max() == 0


def test_landmarks_contours_and_winding(face_mesh, tmp_path):
    path, _ = write_sfm(tmp_path, face_mesh)
    model = load_sfm_npz(path)
    marks = face_mesh.landmarks
    defined = [8, *range(17, 60), *range(61, 64), *range(65, 68)]
    np.testing.assert_array_equal(model.landmark_indices[defined], marks[defined])  # TOML keys are 1-based
    assert model.landmark_indices[60] == marks[48] and model.landmark_indices[64] == marks[54]
    substitutions = {"61": f"49 (vertex {marks[48]})", "65": f"55 (vertex {marks[54]})"}
    assert model.metadata["landmark_substitutions"] == substitutions
    sides = outlines(face_mesh)
    assert set(model.landmark_indices[:8]) <= set(sides["right_contour"])
    assert set(model.landmark_indices[9:17]) <= set(sides["left_contour"])
    heights = model.mean_shape[model.landmark_indices[:8], 1]
    assert np.all(np.diff(heights) < 0)  # iBUG 1 -> 8 runs down the jaw
    np.testing.assert_array_equal(model.contour_landmarks, list(range(8)) + list(range(9, 17)))
    for landmark, line in zip(model.contour_landmarks, model.contour_lines):
        assert model.landmark_indices[landmark] in line
    assert not model.metadata["triangles_flipped_to_ccw"] and outward_score(model.mean_shape, model.triangles) > 0


def test_inward_triangles_are_flipped(face_mesh, tmp_path):
    path, _ = write_sfm(tmp_path, face_mesh, triangles=face_mesh.triangles[:, ::-1].astype(np.int32))
    model = load_sfm_npz(path)
    assert model.metadata["triangles_flipped_to_ccw"]
    assert outward_score(model.mean_shape, model.triangles) > 0


def test_optional_parts_and_explicit_side_files(face_mesh, tmp_path):
    path, _ = write_sfm(tmp_path, face_mesh, side_files=False, expression_blendshapes=None, texcoords=None,
                        expression_names=None)
    bare = load_sfm_npz(path)
    assert bare.exp_dims == 0 and bare.num_landmarks == 0 and bare.contour_lines.shape == (0, 0)
    assert bare.uv.min() >= 0 and bare.uv.max() <= 1 and "cylindrical" in bare.metadata["uv"]
    marks = tmp_path / "marks.txt"
    marks.write_text("# 0-based\n" + " ".join(map(str, face_mesh.landmarks)))
    with_marks = load_any_model(path, landmarks=marks, contours=None)
    np.testing.assert_array_equal(with_marks.landmark_indices, face_mesh.landmarks)
    assert with_marks.contour_lines.shape[0] == 16


@pytest.mark.parametrize("problem, match", [
    (dict(shape_basis=None), "missing shape_basis"),
    (dict(shape_eigenvalues=np.ones(5, np.float32)), "shape_eigenvalues"),
    (dict(mean=np.zeros(10, np.float32)), "'shape_basis' has"),
    (dict(triangles=np.array([[0, 1, 99999]])), "triangles"),
    (dict(shape_eigenvalues=-np.ones(7, np.float32)), "negative"),
    (dict(texcoords=np.zeros((3, 2))), "texcoords"),
])
def test_wrong_keys_and_shapes(face_mesh, tmp_path, problem, match):
    path, _ = write_sfm(tmp_path, face_mesh, **problem)
    with pytest.raises(ModelFormatError, match=match) as info:
        load_sfm_npz(path)
    assert "sfm_small.npz" in str(info.value)


def test_nan_truncated_and_garbage(face_mesh, tmp_path):
    mean = face_mesh.vertices.astype(np.float32).reshape(-1)
    mean[7] = np.nan
    path, _ = write_sfm(tmp_path, face_mesh, mean=mean)
    with pytest.raises(ModelFormatError, match="sfm_small.npz: 'mean' contains NaN"):
        load_any_model(path)
    path, _ = write_sfm(tmp_path, face_mesh)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ModelFormatError, match="truncated.npz"):
        load_any_model(truncated)
    with pytest.raises(ModelFormatError, match="truncated.npz"):
        load_sfm_npz(truncated)
    bad_landmarks = tmp_path / "bad.txt"
    bad_landmarks.write_text("1 2 3")
    with pytest.raises(ModelFormatError, match="bad.txt: expected 68"):
        load_sfm_npz(path, landmarks=bad_landmarks)


def test_real_surrey_model(shared_data, roundtrip):
    model = roundtrip(load_any_model(shared_data / "sfm" / "sfm_3448.npz"))
    assert model.info() == {**model.info(), "vertices": 3448, "faces": 6736, "id_dims": 63, "exp_dims": 6,
                            "tex_dims": 0, "landmarks": 68, "contour_lines": 16}
    assert model.landmark_indices[30] == 114  # iBUG 31, the nose tip, is SFM vertex 114 (TOML is 1-based)
    assert np.argmax(model.mean_shape[model.landmark_indices, 2]) == 30
    assert model.landmark_indices[60] == 398 and model.landmark_indices[64] == 812
    assert not model.metadata["triangles_flipped_to_ccw"] and outward_score(model.mean_shape, model.triangles) > 0
    forehead, chin = np.argmax(model.mean_shape[:, 1]), model.landmark_indices[8]
    assert model.uv[forehead, 1] > model.uv[chin, 1]  # v points up
    right_eye, left_eye = model.mean_shape[model.landmark_indices[36]], model.mean_shape[model.landmark_indices[45]]
    assert right_eye[0] < 0 < left_eye[0]  # +x towards the subject's left
