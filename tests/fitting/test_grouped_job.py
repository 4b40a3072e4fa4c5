"""Grouped fit jobs (diffface.fitting.job with group_by): subjects from folders, a CSV or videos, identity files,
resume, failed frames and subjects, overlays, and ``diffface fit --group-by`` then ``diffface evaluate``.

Frames are synthetic sequences (diffface.app.synth_sequences): 2 subjects × 5 frames at 64 px with .pts files and
ground-truth meshes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene
from diffface.app.synth_sequences import SequenceConfig, generate_sequences
from diffface.cli.main import main as cli_main
from diffface.fitting import LandmarkFitConfig
from diffface.fitting.job import FitJobConfig, read_fit_result, run_fit_job
from diffface.fitting.job.groups import frames_csv_path, identity_path, read_identity, subject_failure_path
from diffface.fitting.job.results import failure_path, result_path
from diffface.fitting.sequence_fitting import SequenceFitConfig
from diffface.morphable_model import load_morphable_model

SIZE, FRAMES = 64, 5
SEQUENCES = ("seq_000", "seq_001")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="module")
def sequences(tmp_path_factory) -> Path:
    """``images/seq_000/`` (a still head) and ``images/seq_001/`` (a moving one), 5 frames each, .pts beside."""
    out = tmp_path_factory.mktemp("sequences")
    render = SynthBenchmarkConfig(occluder_probability=0.0, scene=benchmark_scene(SIZE, 4), subdivision_levels=0)
    generate_sequences(out, SequenceConfig(num_sequences=2, frames=FRAMES, render=render))
    return out


def _config(**changes) -> FitJobConfig:
    base = dict(group_by="folder", num_workers=0, tensorboard=False, progress=False, image_size=SIZE,
                landmarks=LandmarkFitConfig(rounds=2))
    return FitJobConfig(**{**base, **changes})


def _frame_keys(sequence: str) -> list[str]:
    return [f"{sequence}/{sequence}_f{t:04d}.png" for t in range(FRAMES)]


def _identity_part(model, result: dict) -> np.ndarray:
    params = model.layout.unpack(torch.from_numpy(result["params"])[None])
    return params.alpha_id[0].numpy()


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log_rank0.jsonl").read_text().splitlines()]


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _gif_frames(path: Path) -> int:
    with Image.open(path) as image:
        assert image.format == "GIF"
        return image.n_frames


@pytest.fixture(scope="module")
def folder_run(sequences, tmp_path_factory):
    out = tmp_path_factory.mktemp("grouped")
    figures = run_fit_job(sequences / "images", out, _config(save_overlays="gif"))
    return out, figures


def test_folder_job_writes_every_frame_and_one_identity_per_subject(folder_run, model):
    out, figures = folder_run
    assert (figures["fitted"], figures["failed"], figures["skipped"], figures["subjects"]) == (10, 0, 0, 2)
    identities = {}
    for sequence in SEQUENCES:
        identity = read_identity(identity_path(out, sequence))
        assert identity["subject"] == sequence and bool(identity["ordered"])
        assert identity["frames"].tolist() == _frame_keys(sequence)
        assert identity["alpha_id"].shape == (1, model.id_dims) and identity["segments"].tolist() == [[0, FRAMES]]
        assert identity["model_fingerprint"] == model.fingerprint and "beta" not in identity  # stage 1 only
        for key in _frame_keys(sequence):
            result = read_fit_result(result_path(out, key))
            # every frame's stored identity is the subject's, exactly
            np.testing.assert_array_equal(_identity_part(model, result), identity["alpha_id"][0])
            assert {"landmarks/total", "landmarks/smoothness"} <= set(result["energy"])
            assert result["energy"]["landmarks/smoothness"] == 0.0  # smooth is off by default
            # the synthetic landmarks carry 2 px of noise per coordinate (2.8 px RMS distance)
            assert np.sqrt(((result["landmarks"] - result["landmarks_observed"]) ** 2).sum(-1).mean()) < 4.5
        identities[sequence] = identity["alpha_id"][0]
    assert np.abs(identities["seq_000"] - identities["seq_001"]).max() > 1e-2
    # the per-frame energies add up to the subject's landmark energy in the identity file
    for sequence in SEQUENCES:
        total = sum(read_fit_result(result_path(out, k))["energy"]["landmarks/total"] for k in _frame_keys(sequence))
        np.testing.assert_allclose(read_identity(identity_path(out, sequence))["energy"], [total], rtol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["results"], summary["failed"], summary["images"]) == (10, 0, 10)
    assert sorted(r["status"] for r in _log(out)) == ["ok"] * 10


def test_frames_csv_lists_each_frames_pose_and_expression(folder_run, model):
    out, _ = folder_run
    for sequence in SEQUENCES:
        lines = frames_csv_path(out, sequence).read_text().splitlines()
        header, rows = lines[0].split(","), [line.split(",") for line in lines[1:]]
        assert header[:3] == ["frame", "key", "pitch_deg"] and len(header) == 12 + model.exp_dims
        assert [r[1] for r in rows] == _frame_keys(sequence)
        for row in rows:
            result = read_fit_result(result_path(out, row[1]))
            params = model.layout.unpack(torch.from_numpy(result["params"])[None])
            np.testing.assert_allclose([float(v) for v in row[2:5]], np.degrees(params.angles[0].numpy()), rtol=1e-5,
                                       atol=1e-4)
            np.testing.assert_allclose([float(v) for v in row[12:]], params.alpha_exp[0].numpy(), rtol=1e-5,
                                       atol=1e-6)
        assert bool(read_identity(identity_path(out, sequence))["shared"])


def test_overlays_hold_one_picture_per_fitted_frame(folder_run, sequences):
    out, _ = folder_run
    for sequence in SEQUENCES:
        path = out / "overlays" / f"{sequence}.gif"
        assert _gif_frames(path) == FRAMES
        with Image.open(path) as image:
            assert image.size == (SIZE, SIZE)  # the original frames' size (under max_side)


def test_long_subjects_are_fitted_in_segments_with_one_identity_each(sequences, tmp_path, model):
    out = tmp_path / "out"
    figures = run_fit_job(sequences / "images", out, _config(max_group_frames=2, save_overlays="gif"))
    assert (figures["fitted"], figures["subjects"]) == (10, 2)
    identity = read_identity(identity_path(out, "seq_001"))
    assert identity["segments"].tolist() == [[0, 2], [2, 4], [4, 5]] and identity["alpha_id"].shape == (3, model.id_dims)
    assert identity["frames"].tolist() == _frame_keys("seq_001") and identity["energy"].shape == (3,)
    for index, key in enumerate(_frame_keys("seq_001")):
        np.testing.assert_array_equal(_identity_part(model, read_fit_result(result_path(out, key))),
                                      identity["alpha_id"][index // 2])
    assert np.abs(identity["alpha_id"][0] - identity["alpha_id"][1]).max() > 0
    # the overlay shows every fitted frame, not the last segment's only
    assert _gif_frames(out / "overlays" / "seq_001.gif") == FRAMES


def test_resume_fits_nothing_and_a_deleted_identity_refits_that_subject_only(folder_run, sequences, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(folder_run[0], out)
    before = _mtimes(out / "results")
    figures = run_fit_job(sequences / "images", out, _config())
    assert (figures["fitted"], figures["failed"], figures["skipped"], figures["subjects"]) == (0, 0, 10, 0)
    assert _mtimes(out / "results") == before
    identity_path(out, "seq_001").unlink()
    figures = run_fit_job(sequences / "images", out, _config())
    assert (figures["fitted"], figures["skipped"], figures["subjects"]) == (FRAMES, FRAMES, 1)
    after = _mtimes(out / "results")
    for key in before:
        changed = after[key] != before[key]
        assert changed == key.startswith("seq_001/"), key
    assert identity_path(out, "seq_001").is_file()
    # the refit is the same fit (the job is deterministic)
    np.testing.assert_array_equal(read_identity(identity_path(out, "seq_001"))["alpha_id"],
                                  read_identity(identity_path(folder_run[0], "seq_001"))["alpha_id"])
    with pytest.raises(ValueError, match="other settings"):
        run_fit_job(sequences / "images", out, _config(sequence=SequenceFitConfig(smooth=True)))


@pytest.fixture(scope="module")
def mixed(sequences, tmp_path_factory):
    """seq_000 with one frame's .pts missing, seq_001 with none at all, a subfolder of one image and an image
    directly in the input folder."""
    root = tmp_path_factory.mktemp("mixed")
    images = root / "images"
    shutil.copytree(sequences / "images", images)
    (images / "seq_000" / "seq_000_f0002.pts").unlink()
    for pts in (images / "seq_001").glob("*.pts"):
        pts.unlink()
    (images / "solo").mkdir()
    for suffix in (".png", ".pts"):
        shutil.copy(sequences / "images" / "seq_001" / f"seq_001_f0000{suffix}", images / "solo" / f"solo_0{suffix}")
        shutil.copy(sequences / "images" / "seq_001" / f"seq_001_f0003{suffix}", images / f"loose{suffix}")
    out = root / "out"
    figures = run_fit_job(images, out, _config(save_overlays="gif"))
    return images, out, figures


def test_failed_frames_are_recorded_and_the_rest_of_the_subject_fitted(mixed, model):
    images, out, figures = mixed
    assert (figures["fitted"], figures["failed"], figures["subjects"]) == (4 + 1 + 1, 1 + FRAMES, 4)
    failure = json.loads(failure_path(out, "seq_000/seq_000_f0002.png").read_text())
    assert "no landmark annotation" in failure["reason"]
    identity = read_identity(identity_path(out, "seq_000"))
    kept = [k for k in _frame_keys("seq_000") if not k.endswith("f0002.png")]
    assert identity["frames"].tolist() == kept
    for key in kept:
        np.testing.assert_array_equal(_identity_part(model, read_fit_result(result_path(out, key))),
                                      identity["alpha_id"][0])
    assert not result_path(out, "seq_000/seq_000_f0002.png").exists()
    assert _gif_frames(out / "overlays" / "seq_000.gif") == 4  # one picture per fitted frame


def test_a_subject_without_any_good_frame_gets_a_failure_record(mixed):
    images, out, figures = mixed
    record = json.loads(subject_failure_path(out, "seq_001").read_text())
    assert record["status"] == "failed" and record["frames"] == FRAMES
    assert "none of its 5 images could be fitted" in record["reason"]
    assert not identity_path(out, "seq_001").exists() and not (out / "overlays" / "seq_001.gif").exists()
    assert all(failure_path(out, key).is_file() for key in _frame_keys("seq_001"))
    assert any(r.get("subject") == "seq_001" and r["status"] == "failed" for r in _log(out))


def test_one_image_subjects_are_fitted_with_a_note(mixed, model):
    images, out, figures = mixed
    notes = {r["subject"]: r["reason"] for r in _log(out) if r["status"] == "note"}
    assert set(notes) == {"solo", "loose"}
    assert "one usable image of 1" in notes["solo"]
    solo, loose = read_identity(identity_path(out, "solo")), read_identity(identity_path(out, "loose"))
    assert solo["frames"].tolist() == ["solo/solo_0.png"] and bool(solo["ordered"])
    assert loose["frames"].tolist() == ["loose.png"] and not bool(loose["ordered"])  # an image directly in INPUT
    # seq_000 lost a frame but has 4 usable images: no note
    assert "seq_000" not in notes


def test_rerun_skips_failed_subjects_unless_retried(mixed, sequences, tmp_path):
    images, out, _ = mixed
    images_copy, out_copy = tmp_path / "images", tmp_path / "out"
    shutil.copytree(images, images_copy)
    shutil.copytree(out, out_copy)
    figures = run_fit_job(images_copy, out_copy, _config())
    assert (figures["fitted"], figures["failed"], figures["subjects"]) == (0, 0, 0)
    for pts in (sequences / "images" / "seq_001").glob("*.pts"):  # the annotations turn up
        shutil.copy(pts, images_copy / "seq_001" / pts.name)
    figures = run_fit_job(images_copy, out_copy, _config(retry_failed=True))
    assert (figures["fitted"], figures["failed"], figures["subjects"]) == (FRAMES, 0, 1)
    assert identity_path(out_copy, "seq_001").is_file() and not subject_failure_path(out_copy, "seq_001").exists()
    assert not any(failure_path(out_copy, key).exists() for key in _frame_keys("seq_001"))


def test_group_by_csv(sequences, tmp_path, model):
    table = tmp_path / "groups.csv"
    rows = [("images/seq_001/seq_001_f0004.png", "bob"), ("images/seq_000/seq_000_f0001.png", "alice"),
            ("images/seq_001/seq_001_f0000.png", "bob"), ("images/seq_000/seq_000_f0003.png", "alice")]
    shutil.copytree(sequences / "images", tmp_path / "images")
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "subject"])
        writer.writerows(rows)
    out = tmp_path / "out"
    # a DataLoader worker reading whole subjects, and TensorBoard's per-subject scalars and overlays
    config = _config(group_by="csv", sequence=SequenceFitConfig(smooth=True), num_workers=1, tensorboard=True,
                     overlay_samples=2)
    figures = run_fit_job(table, out, config)
    assert (figures["fitted"], figures["subjects"]) == (4, 2)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    for subject, frames in (("bob", [rows[0][0], rows[2][0]]), ("alice", [rows[1][0], rows[3][0]])):
        identity = read_identity(identity_path(out, subject))
        assert identity["frames"].tolist() == frames and not bool(identity["ordered"])  # the file's order
        for key in frames:
            result = read_fit_result(result_path(out, key))
            np.testing.assert_array_equal(_identity_part(model, result), identity["alpha_id"][0])
            assert result["energy"]["landmarks/smoothness"] == 0.0  # a photo set has no order to smooth
    bad = tmp_path / "bad.csv"
    bad.write_text("path,person\na.png,x\n")
    with pytest.raises(ValueError, match="image,subject"):
        run_fit_job(bad, tmp_path / "out_bad", _config(group_by="csv"))


def test_group_by_video_with_annotations_and_an_unreadable_video(optional_import, sequences, tmp_path, model):
    """The frames of a video written with PyAV are fitted from .pts files named as the extracted frames; a video
    that cannot be read is recorded as failed and the other fitted."""
    av = optional_import("av", 'pip install "diffface[video]"')
    videos, annotations = tmp_path / "videos", tmp_path / "annotations"
    videos.mkdir()
    annotations.mkdir()
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(videos / "clip.mp4"), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for t in range(FRAMES):
            frame = np.asarray(Image.open(sequences / "images" / "seq_001" / f"seq_001_f{t:04d}.png").convert("RGB"))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            shutil.copy(sequences / "images" / "seq_001" / f"seq_001_f{t:04d}.pts", annotations / f"clip_f{t:06d}.pts")
        container.mux(stream.encode())
    (videos / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
    out = tmp_path / "out"
    config = _config(group_by="video", video_stride=2, detector_options={"annotation_dir": str(annotations)},
                     sequence=SequenceFitConfig(smooth=True))
    figures = run_fit_job(videos, out, config)
    assert (figures["fitted"], figures["failed"], figures["subjects"]) == (3, 1, 1)
    keys = [f"clip/clip_f{t:06d}.png" for t in (0, 2, 4)]
    assert sorted(p.name for p in (out / "frames" / "clip").iterdir()) == [Path(k).name for k in keys]
    identity = read_identity(identity_path(out, "clip"))
    assert identity["frames"].tolist() == keys and bool(identity["ordered"])
    smoothness = [read_fit_result(result_path(out, k))["energy"]["landmarks/smoothness"] for k in keys]
    assert all(s > 0 for s in smoothness)  # a video: its frames are smoothed
    broken = json.loads(failure_path(out, "frames/broken").read_text())
    assert "broken.mp4" in broken["image"] and broken["status"] == "failed"
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["results"], summary["failed"]) == (3, 1)
    # resume: the frames are not extracted again and nothing is fitted
    before = _mtimes(out / "frames")
    figures = run_fit_job(videos, out, config)
    assert (figures["fitted"], figures["skipped"]) == (0, 3) and _mtimes(out / "frames") == before


def test_cli_fit_grouped_with_texture_and_meshes_then_evaluate(sequences, tmp_path, capsys, model):
    out = tmp_path / "fit"
    code = cli_main(["fit", str(sequences / "images"), "--out", str(out), "--group-by", "folder", "--smooth",
                     "--meshes", "obj", "--stages", "landmarks,texture", "--workers", "0", "--no-tensorboard",
                     "--json", "--set", f"image_size={SIZE}", "--set", "landmarks.rounds=2",
                     "--set", "texture.rounds=1", "--set", "texture.steps_per_group=1", "--set", "texture.uv_size=32"])
    assert code == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    assert (printed["results"], printed["fitted_now"], printed["subjects_fitted_now"], printed["failed"]) == (10, 10, 2, 0)
    config = FitJobConfig.from_yaml(out / "config.yaml")
    assert config.group_by == "folder" and config.sequence.smooth and config.save_meshes == "obj"
    for sequence in SEQUENCES:
        identity = read_identity(identity_path(out, sequence))
        assert identity["beta"].shape == (1, model.tex_dims)  # stage 2: the shared albedo too
        for key in _frame_keys(sequence):
            result = read_fit_result(result_path(out, key))
            params = model.layout.unpack(torch.from_numpy(result["params"])[None])
            np.testing.assert_array_equal(params.alpha_id[0].numpy(), identity["alpha_id"][0])
            np.testing.assert_array_equal(params.beta[0].numpy(), identity["beta"][0])
            assert (out / "meshes" / f"{key}.obj").is_file()
    report_dir = tmp_path / "evaluation"
    assert cli_main(["evaluate", str(out), str(sequences), "--out", str(report_dir), "--json"]) == 0
    capsys.readouterr()
    report = json.loads((report_dir / "report.json").read_text())
    (method,) = report["methods"].values()
    gt_keys = sorted(p.stem for p in (sequences / "meshes").glob("*.obj"))
    assert len(gt_keys) == 10 and sorted(s["key"] for s in method["samples"]) == gt_keys
    assert method["n"] == 10 and method["n_failed"] == 0 and method["unpaired"] == []
    assert all(s["status"] == "ok" for s in method["samples"])
    assert method["mean_mm"] < 5.0


def test_smoothed_subjects_are_filmed_by_one_camera(sequences, tmp_path, model):
    """With --smooth every frame of a video keeps the same original-frame focal length and principal point (the
    frame's centre), though each was fitted in its own crop; per image, both follow the crop."""
    smooth = tmp_path / "smooth"
    run_fit_job(sequences / "images", smooth, _config(sequence=SequenceFitConfig(smooth=True)))
    alone = tmp_path / "alone"
    run_fit_job(sequences / "images", alone, _config())
    for folder, same in ((smooth, True), (alone, False)):
        for sequence in SEQUENCES:
            cameras = []
            for key in _frame_keys(sequence):
                result = read_fit_result(result_path(folder, key))
                params = model.layout.unpack(torch.from_numpy(result["params"])[None])
                cameras.append(torch.cat([params.focal[0], params.principal_point[0]]).numpy())
            cameras = np.stack(cameras)
            if same:
                np.testing.assert_allclose(cameras, np.broadcast_to(cameras[:1], cameras.shape), rtol=1e-5)
                np.testing.assert_allclose(cameras[0, 1:], [SIZE / 2, SIZE / 2], atol=1e-3)
            else:
                assert np.ptp(cameras[:, 1:], axis=0).max() > 1e-2  # the crop boxes move with the landmarks
