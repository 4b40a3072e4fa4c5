import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from diffface.landmark_io import read_pts
from diffface.mesh_io import read_obj
from diffface.morphable_model import load_morphable_model
from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark
from diffface.app.synth_sequences import SequenceConfig, expression_track, generate_sequences, smooth_curve

SIZE, SEQUENCES, FRAMES = 64, 2, 6


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


def small_config(batch_size=4, seed=0, sequences=SEQUENCES, frames=FRAMES, **kw):
    render = SynthBenchmarkConfig(scene=benchmark_scene(SIZE, seed), occluder_probability=0.0, subdivision_levels=0,
                                  batch_size=batch_size)
    return SequenceConfig(num_sequences=sequences, frames=frames, render=render, **kw)


@pytest.fixture(scope="module")
def seq(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("sequences") / "SEQ"
    summary = generate_sequences(out, small_config(), model=model)
    return out, summary


def truth(out, model):
    data = np.load(out / "params.npz")
    return data, model.layout.unpack(torch.from_numpy(data["params"]))


def rows(data, sequence):
    return np.flatnonzero(data["sequence"] == sequence)


def test_layout_and_manifest(seq, model):
    out, summary = seq
    assert summary["sequences"] == SEQUENCES and summary["images"] == SEQUENCES * FRAMES
    assert summary["static_sequences"] == 1  # the default with two or more sequences
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.json", "meshes", "params.npz"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["seq_000", "seq_001"]
    assert sorted(p.name for p in (out / "images/seq_001").iterdir())[:2] == ["seq_001_f0000.png",
                                                                             "seq_001_f0000.pts"]
    meshes = sorted(p.name for p in (out / "meshes").iterdir())
    assert len(meshes) == 2 * SEQUENCES * FRAMES and meshes[:2] == ["seq_000_f0000.obj",
                                                                    "seq_000_f0000_landmarks.npy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "diffface-synth" and manifest["model"]["fingerprint"] == model.fingerprint
    assert {"ground_truth_mesh", "landmarks", "version"} <= set(manifest)
    assert manifest["sequences"] == [
        {"name": "seq_000", "frames": FRAMES, "motion": "static", "images": "images/seq_000"},
        {"name": "seq_001", "frames": FRAMES, "motion": "moving", "images": "images/seq_001"}]
    assert manifest["config"]["render"]["num_faces"] == SEQUENCES * FRAMES
    sample = manifest["samples"][FRAMES + 2]
    assert (sample["name"], sample["sequence"], sample["frame"]) == ("seq_001_f0002", 1, 2)
    assert sample["image"] == "images/seq_001/seq_001_f0002.png" and sample["mesh"] == "meshes/seq_001_f0002.obj"
    assert sample["occluders"] == 0
    for sample in manifest["samples"]:
        assert np.asarray(Image.open(out / sample["image"])).shape == (SIZE, SIZE, 3)
        assert read_pts(out / sample["landmarks"]).shape == (68, 2)
        assert np.load(out / sample["landmarks_3d"]).shape == (68, 3)
        assert abs(sample["yaw_deg"]) <= 60 and abs(sample["pitch_deg"]) <= 15 and abs(sample["roll_deg"]) <= 10
    data, _ = truth(out, model)
    assert data["params"].shape == (SEQUENCES * FRAMES, model.layout.full_size)
    assert data["sequence"].dtype == np.int64 and data["sequence"].tolist() == [0] * FRAMES + [1] * FRAMES
    assert data["frame"].dtype == np.int64 and data["frame"].tolist() == list(range(FRAMES)) * SEQUENCES
    assert data["sample_names"][FRAMES] == "seq_001_f0000" and data["landmarks_2d"].shape == (12, 68, 2)


def test_one_subject_per_sequence(seq, model):
    out, _ = seq
    data, params = truth(out, model)
    a, b = rows(data, 0), rows(data, 1)
    for name in ("alpha_id", "beta", "sh", "focal", "principal_point"):
        values = getattr(params, name)
        assert (values[a] == values[a[0]]).all() and (values[b] == values[b[0]]).all(), name
        if name not in ("focal", "principal_point"):  # one camera model for all
            assert not torch.equal(values[a[0]], values[b[0]]), name
    for key in ("noise_std", "blur_sigma_px", "displacement_amplitude_mm"):
        assert len(set(data[key][a])) == 1 and len(set(data[key][b])) == 1 and data[key][a[0]] != data[key][b[0]]
    # the same detail on every frame: the ground truth's offset from the model shape keeps its size per vertex
    shapes = model.shape(params.alpha_id, params.alpha_exp).double().numpy()
    offsets = [np.linalg.norm(read_obj(out / f"meshes/seq_001_f{f:04d}.obj")[0] - shapes[b[f]], axis=1)
               for f in range(FRAMES)]
    assert offsets[0].max() > 0.4 and max(np.abs(o - offsets[0]).max() for o in offsets) < 1e-3


def test_static_sequence_holds_still_but_its_noise_moves(seq, model):
    out, _ = seq
    data, params = truth(out, model)
    a = rows(data, 0)
    for name in ("angles", "translation", "alpha_exp"):
        assert (getattr(params, name)[a] == getattr(params, name)[a[0]]).all(), name
    assert (out / "meshes/seq_000_f0000.obj").read_bytes() == (out / "meshes/seq_000_f0005.obj").read_bytes()
    np.testing.assert_array_equal(data["landmarks_2d_clean"][a[0]], data["landmarks_2d_clean"][a[-1]])
    first, last = (read_pts(out / f"images/seq_000/seq_000_f{f:04d}.pts") for f in (0, FRAMES - 1))
    jitter = np.linalg.norm(first - last, axis=1)
    assert 0.5 < jitter.mean() < 8  # two frames' 2 px landmark noise
    image = lambda f: np.asarray(Image.open(out / f"images/seq_000/seq_000_f{f:04d}.png"), dtype=float)  # noqa: E731
    changed = image(0) != image(FRAMES - 1)  # image noise drawn anew every frame (here σ = 0.2 grey levels)
    assert 0.05 < changed.mean() and np.abs(image(0) - image(FRAMES - 1)).max() <= 3


def test_moving_sequence_moves_smoothly(seq, model):
    out, _ = seq
    data, params = truth(out, model)
    b = rows(data, 1)
    angles = params.angles[b].double().numpy()
    yaw_range = np.ptp(angles[:, 1])
    assert yaw_range > math.radians(10)
    assert np.abs(np.diff(angles, 2, axis=0)).max() < 0.1 * yaw_range
    translation = params.translation[b].double().numpy()
    assert np.ptp(translation, axis=0).max() > 1.0  # the head moves (centroid placement follows the turn)
    assert not torch.equal(params.alpha_exp[b[0]], params.alpha_exp[b[-1]])


def test_motion_curves_are_bounded_and_smooth(model):
    g = torch.Generator().manual_seed(1)
    for sweep in (0.0, 0.5):
        curve = smooth_curve(300, 60.0, g, (40.0, 160.0), 2, sweep)
        assert curve.shape == (300,) and curve.abs().max() <= 60.0 and np.ptp(curve.numpy()) > 10
        assert np.abs(np.diff(curve.numpy(), 2)).max() < 60.0 * (2 * math.pi / 40) ** 2
    track = expression_track(model, 50, 16, 0.7, torch.Generator().manual_seed(2))
    assert track.shape == (50, model.exp_dims)
    steps = np.abs(np.diff(track.numpy(), axis=0)).max(1)
    assert steps.max() < 0.2 * np.abs(track.numpy()).max()
    assert steps[15] < steps[7] and steps[31] < steps[23]  # still at the keyframes (0, 16, 32), fastest between


def test_independent_of_batch_size_and_a_function_of_the_seed(seq, model, tmp_path):
    out, _ = seq
    again = tmp_path / "again"
    generate_sequences(again, small_config(batch_size=5), model=model)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        if name.name != "manifest.json":
            assert (out / name).read_bytes() == (again / name).read_bytes(), name
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (out, again)]
    for manifest in manifests:
        manifest["config"]["render"].pop("batch_size")
    assert manifests[0] == manifests[1]
    other = tmp_path / "other"
    generate_sequences(other, small_config(seed=1, sequences=1, frames=2), model=model)
    assert (other / "images/seq_000/seq_000_f0000.pts").read_bytes() != (
        out / "images/seq_000/seq_000_f0000.pts").read_bytes()


def test_rewriting_a_folder_replaces_it(seq, model, tmp_path):
    out, _ = seq
    target = tmp_path / "T"
    shutil.copytree(out, target)
    generate_sequences(target, small_config(sequences=1, frames=2), model=model)
    assert [p.name for p in (target / "images").iterdir()] == ["seq_000"]
    assert len(list((target / "meshes").iterdir())) == 4
    generate_benchmark(target, SynthBenchmarkConfig(num_faces=1, scene=benchmark_scene(32), subdivision_levels=0),
                       model=model)
    assert sorted(p.name for p in (target / "images").iterdir()) == ["face_0000.png", "face_0000.pts"]
    generate_sequences(target, small_config(sequences=1, frames=1), model=model)
    assert sorted(p.name for p in (target / "meshes").iterdir()) == ["seq_000_f0000.obj",
                                                                     "seq_000_f0000_landmarks.npy"]


def test_evaluate_pairs_the_ground_truth_by_stem(seq, tmp_path):
    from diffface.evaluation.evaluate import evaluate_methods

    out, _ = seq
    report = evaluate_methods({"truth": out}, out, tmp_path / "eval")
    figures = report["methods"]["truth"]
    assert figures["n"] == SEQUENCES * FRAMES and figures["n_failed"] == 0
    assert figures["mean_mm"] < 1e-6 and figures["auc"] > 0.99


@pytest.mark.parametrize("change, name", [
    (dict(num_sequences=0), "num_sequences"), (dict(frames=0), "frames"),
    (dict(num_sequences=2, static_sequences=3), "static_sequences"), (dict(drift_mm=-1.0), "drift_mm"),
    (dict(render=SynthBenchmarkConfig(subdivision_levels=-1)), "subdivision_levels"),
])
def test_config_out_of_range_names_the_setting(change, name, tmp_path):
    with pytest.raises(ValueError, match=name):
        generate_sequences(tmp_path / "out", SequenceConfig(**change))
    assert not (tmp_path / "out").exists()


def test_static_sequences_default():
    assert SequenceConfig(num_sequences=1).num_static == 0 and SequenceConfig(num_sequences=3).num_static == 1
    assert SequenceConfig(num_sequences=3, static_sequences=2).num_static == 2
    assert SequenceConfig().render.occluder_probability == 0
