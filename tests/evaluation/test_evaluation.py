import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from diffface.alignment import Similarity
from diffface.cli.main import main
from diffface.evaluation import (TriangleMeshIndex, auc, ced_curve, closest_points_brute_force,
                                 closest_points_on_mesh, icp, landmark_alignment, normalized_distance_d)
from diffface.evaluation.evaluate import mesh_key
from diffface.evaluation.reference_meshes import height_field_scan
from diffface.fitting.job.results import RESULT_FORMAT, result_path, write_fit_result
from diffface.mesh_io import write_obj
from diffface.model_format import save_model_npz
from diffface.morphable_model import MorphableModel


def surface_samples(vertices, faces, count, rng):
    tri = rng.choice(len(faces), count)
    return np.einsum("nk,nkd->nd", rng.dirichlet([1, 1, 1], count), vertices[faces[tri]])


def test_closest_points_match_brute_force_random_mesh():
    rng = np.random.default_rng(0)
    vertices = rng.normal(size=(60, 3))
    faces = rng.integers(0, 60, size=(120, 3))  # includes degenerate triangles
    points = np.concatenate([rng.normal(size=(200, 3)), 30 * rng.normal(size=(40, 3)), vertices[:20],
                             (vertices[faces[:20, 0]] + vertices[faces[:20, 1]]) / 2])
    fast, slow = closest_points_on_mesh(points, vertices, faces), closest_points_brute_force(points, vertices, faces)
    np.testing.assert_allclose(fast.distances, slow.distances, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(fast.points - points, axis=1), fast.distances, atol=1e-12)
    corners = vertices[faces[fast.triangle_ids]]
    np.testing.assert_allclose(np.einsum("nk,nkd->nd", fast.barycentrics, corners), fast.points, atol=1e-12)
    assert (fast.barycentrics >= -1e-12).all()


def test_closest_points_on_surface_with_noise_and_far_points():
    rng = np.random.default_rng(1)
    vertices, faces = height_field_scan(30)
    points = np.concatenate([vertices + rng.normal(size=vertices.shape) * 2, rng.normal(size=(30, 3)) * 500])
    index = TriangleMeshIndex(vertices, faces, k=4)
    fast, slow = index.query(points), closest_points_brute_force(points, vertices, faces)
    np.testing.assert_allclose(fast.distances, slow.distances, atol=1e-9)


@pytest.mark.parametrize("with_scale", [False, True])
@pytest.mark.parametrize("use_landmarks", [False, True])
def test_icp_recovers_a_similarity(with_scale, use_landmarks):
    rng = np.random.default_rng(2)
    vertices, faces = height_field_scan(50)
    truth = surface_samples(vertices, faces, 3000, rng)  # a different sampling of the same surface
    rotation = Rotation.random(random_state=5).as_matrix()
    scale = 1.25 if with_scale else 1.0
    source = scale * truth @ rotation.T + rng.normal(size=3) * 20
    init = (source[:68], truth[:68]) if use_landmarks else None
    result = icp(source, vertices, faces, with_scale=with_scale, init=init, coarse_points=1000, tolerance=1e-7)
    assert result.converged
    assert np.abs(result.aligned - truth).max() < 1e-4 * 80
    np.testing.assert_allclose(float(result.similarity.scale[0]), 1 / scale, rtol=1e-5)
    np.testing.assert_allclose(result.similarity.rotation[0].numpy(), rotation.T, atol=1e-4)


def test_landmark_alignment_only_uses_landmarks():
    rng = np.random.default_rng(3)
    vertices, faces = height_field_scan(30)
    truth = surface_samples(vertices, faces, 500, rng)
    rotation = Rotation.random(random_state=1).as_matrix()
    source = truth @ rotation.T + 5
    result = landmark_alignment(source, source[:10], truth[:10], vertices, faces)
    assert result.iterations == 0 and np.abs(result.aligned - truth).max() < 1e-9
    assert result.distances.max() < 1e-6


def test_degenerate_inputs_raise():
    vertices, faces = height_field_scan(10)
    with pytest.raises(ValueError, match="empty"):
        icp(np.zeros((0, 3)), vertices, faces)
    with pytest.raises(ValueError, match="no triangles"):
        icp(vertices, vertices, np.zeros((0, 3), int))
    bad = vertices.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        icp(bad, vertices, faces)
    with pytest.raises(ValueError, match="NaN"):
        icp(vertices, bad, faces)
    far = Similarity(torch.eye(3, dtype=torch.float64)[None], torch.tensor([[1e4, 0, 0]], dtype=torch.float64),
                     torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="no overlap"):
        icp(vertices, vertices, faces, init=far, max_distance=10.0)
    with pytest.raises(ValueError, match="at least 3 landmarks"):
        landmark_alignment(vertices, np.full((68, 3), np.nan), vertices[:68], vertices, faces)


def test_normalized_distance_hand_example():
    gt = np.array([[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [2, 2, 0]])  # spread: 4 points at distance √2: 8
    pred = gt + np.array([[0.1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    assert normalized_distance_d(pred, gt) == pytest.approx(100 * 0.01 / 8)
    batched = normalized_distance_d(torch.tensor(np.stack([pred, gt])), torch.tensor(np.stack([gt, gt])))
    np.testing.assert_allclose(batched.numpy(), [100 * 0.01 / 8, 0])


def test_auc_matches_numerical_integration_and_ced():
    rng = np.random.default_rng(4)
    errors = np.concatenate([rng.uniform(0, 1.5, 50), [np.inf, 0.0]])
    t = np.linspace(0, 1, 200001)
    curve = ced_curve(errors, t)
    assert auc(errors) == pytest.approx(np.trapezoid(curve, t), abs=1e-4)
    assert auc(np.array([0.0, 0.5])) == pytest.approx(0.75)
    assert curve[-1] == pytest.approx(np.mean(errors <= 1))
    with pytest.raises(ValueError):
        auc(np.array([np.nan]))


def _write_folder(folder, meshes, landmarks=None):
    folder.mkdir(parents=True)
    for name, (vertices, faces) in meshes.items():
        write_obj(folder / f"{name}.obj", vertices, faces)
        if landmarks is not None:
            np.save(folder / f"{name}_landmarks.npy", landmarks[name])


def test_cli_evaluate_and_compare(tmp_path, capsys):
    rng = np.random.default_rng(5)
    vertices, faces = height_field_scan(20)
    landmark_ids = np.arange(0, 400, 6)[:68]
    gt, good, bad = {}, {}, {}
    for k in range(3):
        shape = vertices + rng.normal(size=vertices.shape) * 0.3
        gt[f"face_{k:04d}"] = (shape, faces)
        moved = shape @ Rotation.random(random_state=k).as_matrix().T + 3
        good[f"face_{k:04d}.png"] = (moved + rng.normal(size=shape.shape) * 0.2, faces)
        bad[f"face_{k:04d}.png"] = (moved + rng.normal(size=shape.shape) * 3.0, faces)
    del bad["face_0002.png"]  # a missing prediction is a failure
    _write_folder(tmp_path / "S" / "meshes", gt, {key: v[landmark_ids] for key, (v, _) in gt.items()})
    _write_folder(tmp_path / "A" / "meshes", good)
    _write_folder(tmp_path / "B", bad)
    np.save(tmp_path / "ids.npy", landmark_ids)
    out = tmp_path / "E"
    compare = ["evaluate", "--compare", f"good={tmp_path / 'A'}", f"bad={tmp_path / 'B'}", "--gt",
               str(tmp_path / "S" / "meshes"), "--landmarks", str(tmp_path / "ids.npy"), "--out", str(out), "--json"]
    assert main(compare) == 2  # an unmatched name is an error unless asked otherwise
    assert "no prediction for 1 of the 3 ground-truth meshes (face_0002)" in capsys.readouterr().err
    assert not out.exists()
    assert main(compare + ["--allow-missing"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["good/n"] == 3 and summary["bad/n"] == 2 and summary["bad/n_failed"] == 1
    report = json.loads((out / "report.json").read_text())
    good_m, bad_m = report["methods"]["good"], report["methods"]["bad"]
    for m in (good_m, bad_m):
        assert {"auc", "median", "n", "mean_mm", "median_mm", "rms_mm", "samples", "landmarks"} <= set(m)
    assert good_m["auc"] > bad_m["auc"] and good_m["median"] < bad_m["median"]
    assert good_m["landmarks"]["n"] == 3 and good_m["mean_mm"] < 0.5
    assert [s["status"] for s in bad_m["samples"]] == ["ok", "ok", "failed"]
    image = Image.open(out / "ced.png")
    image.verify()
    assert image.format == "PNG"
    # single pair form, rigid and without landmarks beside the predictions
    out2 = tmp_path / "E2"
    assert main(["evaluate", str(tmp_path / "A"), str(tmp_path / "S"), "--scale", "--out", str(out2)]) == 0
    report2 = json.loads((out2 / "report.json").read_text())
    (method,) = report2["methods"].values()
    assert method["n"] == 3 and method["landmarks"] is None and report2["with_scale"] is True


def test_cli_evaluate_bad_arguments(tmp_path, capsys):
    assert main(["evaluate", "--compare", "x", "--gt", str(tmp_path), "--out", str(tmp_path / "E")]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "E")]) == 2
    assert "no such folder" in capsys.readouterr().err


def _fit_folder(folder, model, model_spec, params):
    """A ``diffface fit`` folder without meshes: one result per row of ``params`` (``face_000k.png``)."""
    folder.mkdir(parents=True)
    if model_spec is not None:
        (folder / "config.yaml").write_text(f"model: {model_spec}\nstages: [landmarks]\n")
    for k, row in enumerate(params):
        write_fit_result(result_path(folder, f"face_{k:04d}.png"), {
            "format": np.array(RESULT_FORMAT), "image": np.array(f"face_{k:04d}.png"),
            "key": np.array(f"face_{k:04d}.png"), "image_size": np.array([96, 96]),
            "stages": np.array(["landmarks"]), "params": row.numpy(), "param_names": np.array(model.layout.names()),
            "landmarks": np.zeros((68, 2)), "landmarks_observed": np.zeros((68, 2)),
            "energy_names": np.array(["landmarks/total"]), "energy_values": np.array([1.0]),
            "flag_names": np.array(["diverged"]), "flag_values": np.array([False]), "crop_matrix": np.eye(3),
            "crop_size": np.array(96), "model_name": np.array(model.name),
            "model_fingerprint": np.array(model.fingerprint)})
    return folder


def test_cli_evaluates_a_fit_folder_without_meshes_from_its_results(tmp_path, capsys, tiny_model_data):
    """The meshes are rebuilt from the fitted parameters and the model: the same figures as from meshes."""
    model = MorphableModel(tiny_model_data)
    model_path = save_model_npz(tiny_model_data, tmp_path / "tiny.npz")
    g = torch.Generator().manual_seed(3)
    truth = replace(model.layout.zeros(3, include_fitting=False), alpha_id=torch.randn(3, model.id_dims, generator=g))
    fitted = replace(truth, alpha_id=truth.alpha_id + torch.randn(3, model.id_dims, generator=g) * 0.5)
    faces = model.triangles.numpy()
    with torch.no_grad():
        true_shapes = model.shape(truth.alpha_id, truth.alpha_exp).double().numpy()
        fitted_shapes = model.shape(fitted.alpha_id, fitted.alpha_exp).double().numpy()
    indices = model.landmark_indices.numpy()
    _write_folder(tmp_path / "S" / "meshes", {f"face_{k:04d}": (true_shapes[k], faces) for k in range(3)},
                  {f"face_{k:04d}": true_shapes[k][indices] for k in range(3)})
    fits = _fit_folder(tmp_path / "F", model, model_path, model.layout.pack(fitted))
    assert main(["evaluate", str(fits), str(tmp_path / "S"), "--out", str(tmp_path / "E"), "--json"]) == 0
    from_results = json.loads(capsys.readouterr().out)
    assert from_results["F/n"] == 3 and from_results["F/n_failed"] == 0 and from_results["F/landmarks/n"] == 3
    assert 0 < from_results["F/auc"] < 1 and from_results["F/mean_mm"] > 0
    # the same fitted shapes written as meshes, with the model's landmark vertices: the same figures
    _write_folder(tmp_path / "M" / "meshes", {f"face_{k:04d}.png": (fitted_shapes[k], faces) for k in range(3)})
    np.save(tmp_path / "ids.npy", indices)
    assert main(["evaluate", str(tmp_path / "M"), str(tmp_path / "S"), "--landmarks", str(tmp_path / "ids.npy"),
                 "--out", str(tmp_path / "E2"), "--json"]) == 0
    from_meshes = json.loads(capsys.readouterr().out)
    for key in ("auc", "median", "mean_mm", "landmarks/auc"):
        assert from_results[f"F/{key}"] == pytest.approx(from_meshes[f"M/{key}"], rel=1e-4, abs=1e-6)
    assert mesh_key("face_0001.ppm.obj") == mesh_key("face_0001.pgm.npz"[:-4]) == "face_0001"


def test_cli_evaluate_says_what_is_missing(tmp_path, capsys, tiny_model_data):
    model = MorphableModel(tiny_model_data)
    model_path = save_model_npz(tiny_model_data, tmp_path / "tiny.npz")
    vertices = model.mean_shape.double().numpy()
    _write_folder(tmp_path / "S" / "meshes", {"face_0000": (vertices, model.triangles.numpy())})
    params = model.layout.pack(model.layout.zeros(1, include_fitting=False))

    def error(*argv):
        assert main(["evaluate", *map(str, argv), "--out", str(tmp_path / "E")]) == 2
        return capsys.readouterr().err.strip()

    (tmp_path / "empty").mkdir()
    assert error(tmp_path / "empty", tmp_path / "S") == (
        f"diffface evaluate: error: {tmp_path / 'empty'}: no predicted meshes (.obj, .ply, .off, .wrl) here or in "
        f"{tmp_path / 'empty' / 'meshes'}")
    no_config = _fit_folder(tmp_path / "F1", model, None, params)
    assert "names no model (no config.yaml); pass --model" in error(no_config, tmp_path / "S")
    lost_model = _fit_folder(tmp_path / "F2", model, tmp_path / "gone.npz", params)
    assert "gone.npz: no such model file (pass --model)" in error(lost_model, tmp_path / "S")
    assert "fitted with the model 'tiny'" in error(lost_model, tmp_path / "S", "--model", "builtin")
    unmatched = _fit_folder(tmp_path / "F3", model, model_path, params.expand(2, -1))
    (unmatched / "results" / "face_0000.png.npz").rename(unmatched / "results" / "other.png.npz")
    assert "none of its 2 predictions (face_0001, other) pairs by name with the 1 ground-truth meshes" in error(
        unmatched, tmp_path / "S", "--allow-missing")
    assert not (tmp_path / "E").exists()
    # --model overrides the config's, and one unmatched prediction needs --allow-missing
    (unmatched / "results" / "other.png.npz").rename(unmatched / "results" / "face_0000.png.npz")
    assert "1 predictions without a ground truth" in error(unmatched, tmp_path / "S", "--model", model_path)
    assert main(["evaluate", str(unmatched), str(tmp_path / "S"), "--model", str(model_path), "--allow-missing",
                 "--out", str(tmp_path / "E"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["F3/n"] == 1
