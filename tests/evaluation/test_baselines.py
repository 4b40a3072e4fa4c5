"""Baselines: the mean shape and the model registered to a scan in 3D (the upper bound)."""

import numpy as np
import pytest
import torch

from diffface.cli.main import main
from diffface.evaluation.baselines import mean_shape_baseline, upper_bound, write_upper_bound
from diffface.evaluation.closest_point import closest_points_on_mesh
from diffface.mesh_io import read_obj, write_obj
from diffface.morphable_model import load_morphable_model


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


def _rotation(pitch, yaw, roll):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [pitch, yaw, roll], degrees=True).as_matrix()


@pytest.fixture(scope="module")
def true_shape(model):
    alpha_id, alpha_exp, _ = model.sample_coefficients(1, generator=torch.Generator().manual_seed(0))
    return model.shape(alpha_id, alpha_exp)[0].double().numpy()


@pytest.mark.parametrize("scale, with_scale", [(1.2, True), (1.0, False)])
def test_upper_bound_recovers_a_rotated_scaled_model_shape(model, true_shape, scale, with_scale):
    faces = model.triangles.numpy()
    scan = scale * true_shape @ _rotation(10, 25, -5).T + np.array([5.0, -3.0, 100.0])
    landmarks = scan[model.landmark_indices.numpy()]
    fit = upper_bound(model, scan, faces, landmarks, iterations=6, with_scale=with_scale)
    assert fit.vertices_model.shape == fit.vertices_scan.shape == (model.num_vertices, 3)
    assert fit.alpha_id.shape == (model.id_dims,) and fit.alpha_exp.shape == (model.exp_dims,)
    np.testing.assert_allclose(fit.similarity.apply(torch.from_numpy(fit.vertices_model)[None])[0].numpy(),
                               fit.vertices_scan, atol=1e-9)
    # the scan-to-mesh distance (NoW's direction) is sub-millimetre ...
    upper = closest_points_on_mesh(scan, fit.vertices_scan, faces).distances
    assert upper.mean() < 0.5 and np.median(upper) < 0.4
    # ... and well below the mean shape's, aligned by the same landmarks
    mean_fit = upper_bound(model, scan, faces, landmarks, iterations=1, with_scale=with_scale, prior_weight=1e12)
    mean_only = closest_points_on_mesh(scan, mean_fit.vertices_scan, faces).distances
    assert np.abs(mean_fit.alpha_id).max() < 1e-3
    assert mean_only.mean() > 4 * upper.mean()
    if not with_scale:
        assert float(fit.similarity.scale) == 1.0


def test_upper_bound_on_a_point_cloud_without_landmarks(model, true_shape):
    scan = true_shape + np.array([0.0, 2.0, -1.0])  # no rotation: no landmarks needed
    fit = upper_bound(model, scan, None, None, iterations=6, with_scale=False)
    mean_error = np.linalg.norm(model.mean_shape.double().numpy() - true_shape, axis=1).mean()
    assert fit.residual_mm < 1.5 and np.linalg.norm(fit.vertices_model - true_shape, axis=1).mean() < mean_error


def test_upper_bound_rejects_bad_input(model, true_shape):
    with pytest.raises(ValueError, match="scan_vertices"):
        upper_bound(model, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="scan_landmarks"):
        upper_bound(model, true_shape, None, np.zeros((7, 3)))
    with pytest.raises(ValueError, match="iterations"):
        upper_bound(model, true_shape, iterations=0)


def _synth_folder(tmp_path, model, true_shape):
    """A ground-truth folder in ``diffface synth``'s layout: ``meshes/NAME.obj`` + ``NAME_landmarks.npy``
    (landmarks with NaN rows, as undefined landmarks are stored)."""
    meshes = tmp_path / "S" / "meshes"
    meshes.mkdir(parents=True)
    faces = model.triangles.numpy()
    landmarks = true_shape[model.landmark_indices.clamp_min(0).numpy()]
    landmarks[~model.landmark_mask.numpy()] = np.nan
    landmarks[60] = np.nan
    write_obj(meshes / "face_0000.obj", true_shape, faces)
    np.save(meshes / "face_0000_landmarks.npy", landmarks)
    return meshes


def test_write_upper_bound_and_mean_shape_for_a_synth_folder(tmp_path, model, true_shape):
    meshes = _synth_folder(tmp_path, model, true_shape)
    fits = write_upper_bound(model, meshes, tmp_path / "upper", iterations=5)
    vertices, faces = read_obj(tmp_path / "upper" / "face_0000.obj")
    assert list(fits) == ["face_0000"] and vertices.shape == (model.num_vertices, 3)
    assert closest_points_on_mesh(true_shape, vertices, faces).distances.mean() < 0.6  # mm
    paths = mean_shape_baseline(model, ["face_0000", "face_0001"], tmp_path / "mean")
    assert [p.name for p in paths] == ["face_0000.obj", "face_0001.obj"]
    np.testing.assert_allclose(read_obj(paths[1])[0], model.mean_shape.double().numpy(), atol=1e-4)


def test_baselines_command(tmp_path, model, true_shape, capsys):
    meshes = _synth_folder(tmp_path, model, true_shape)
    out = tmp_path / "B"
    assert main(["baselines", "--gt", str(meshes), "--out", str(out), "--meanshape", "--upper-bound",
                 "--iterations", "3", "--json"]) == 0
    assert (out / "meanshape" / "face_0000.obj").is_file() and (out / "upper" / "face_0000.obj").is_file()
    assert '"samples": 1' in capsys.readouterr().out
    assert main(["baselines", "--gt", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err
