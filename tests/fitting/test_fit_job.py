"""``diffface fit``: batched, resumable, sharded fitting of a folder of photos (diffface.fitting.job)."""

from __future__ import annotations

from dataclasses import replace
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffface.cli.main import main as cli_main
from diffface.fitting import LandmarkFitConfig
from diffface.fitting.job import (RESULT_FORMAT, FitJobConfig, list_fit_inputs, read_fit_result,
                                      read_fit_results, run_fit_job)
from diffface.fitting.job.config import fit_settings
from diffface.fitting.texture_fitting import TextureFitConfig
from diffface.landmark_io import write_pts
from diffface.mesh_io import read_obj
from diffface.morphable_model import load_morphable_model
from diffface.report_images import to_numpy, to_uint8_image
from diffface.app.synth import SceneConfig, random_backgrounds, sample_scenes
from diffface.landmark_marching import project_landmarks

NUM_FACES = 5
SIZE = 160
FAST = LandmarkFitConfig(rounds=2, steps_per_group=2, focal_px=700.0)


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, model) -> Path:
    """5 rendered faces with .pts, a corrupt image and a face without landmarks."""
    from diffface.renderers import FaceRenderer

    folder = tmp_path_factory.mktemp("photos")
    scene = SceneConfig(image_size=SIZE, focal_px=700.0, yaw_deg=30.0, seed=3)
    truth = sample_scenes(model, NUM_FACES + 1, scene)
    landmarks, _ = project_landmarks(model, truth)
    with torch.no_grad():
        images = FaceRenderer(model, SIZE, backend="builtin")(truth, random_backgrounds(NUM_FACES + 1, SIZE)).images
    for i in range(NUM_FACES):
        Image.fromarray(to_uint8_image(images[i])).save(folder / f"face_{i}.png")
        write_pts(folder / f"face_{i}.pts", to_numpy(landmarks[i]))
    Image.fromarray(to_uint8_image(images[NUM_FACES])).save(folder / "no_landmarks.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a picture")
    return folder


def _config(**changes) -> FitJobConfig:
    base = dict(batch_size=4, num_workers=0, tensorboard=False, progress=False, landmarks=FAST)
    return FitJobConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def landmark_run(photos, tmp_path_factory):
    """One single-process landmarks-stage run (with a DataLoader worker and TensorBoard)."""
    out = tmp_path_factory.mktemp("fit")
    figures = run_fit_job(photos, out, _config(num_workers=1, tensorboard=True, overlay_samples=2))
    return out, figures


def test_results_format_and_bad_images(landmark_run, photos, model):
    out, figures = landmark_run
    assert (figures["fitted"], figures["failed"], figures["skipped"]) == (NUM_FACES, 2, 0)
    results = sorted((out / "results").glob("*.npz"))
    assert [p.name for p in results] == [f"face_{i}.png.npz" for i in range(NUM_FACES)]
    one = read_fit_result(results[0])
    assert one["format"] == RESULT_FORMAT and one["model_fingerprint"] == model.fingerprint
    assert one["params"].shape == (model.layout.network_size,) and one["param_names"] == model.layout.names()
    assert one["stages"] == ["landmarks"] and tuple(one["image_size"]) == (SIZE, SIZE)
    assert set(one["energy"]) == {"landmarks/total", "landmarks/landmarks", "landmarks/id_prior", "landmarks/exp_prior"}
    assert one["flags"] == {"diverged": False, "nonfinite": False, "partial_landmarks": False}
    # parameters refer to the original image: projecting them gives the stored landmarks, close to the observed
    params = model.layout.unpack(torch.from_numpy(one["params"])[None])
    projected, _ = project_landmarks(model, params)
    np.testing.assert_allclose(projected[0].numpy(), one["landmarks"], atol=1e-2)
    assert np.sqrt(((one["landmarks"] - one["landmarks_observed"]) ** 2).sum(-1).mean()) < 3.0

    table = read_fit_results(out)
    assert table["params"].shape == (NUM_FACES, model.layout.network_size)
    assert table["landmarks"].shape == (NUM_FACES, 68, 2) and table["energy/landmarks/total"].shape == (NUM_FACES,)
    reasons = {Path(f["image"]).name: f["reason"] for f in table["failed"]}
    assert set(reasons) == {"corrupt.png", "no_landmarks.png"}
    assert "not a readable image" in reasons["corrupt.png"] and "no landmark annotation" in reasons["no_landmarks.png"]

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["results"], summary["failed"], summary["images"]) == (NUM_FACES, 2, NUM_FACES + 2)
    log = [json.loads(line) for line in (out / "log_rank0.jsonl").read_text().splitlines()]
    assert sorted(r["status"] for r in log) == ["failed"] * 2 + ["ok"] * NUM_FACES
    assert FitJobConfig.from_yaml(out / "config.yaml") == _config(num_workers=1, tensorboard=True, overlay_samples=2)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_rerun_skips_done_images(landmark_run, photos):
    out, _ = landmark_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    figures = run_fit_job(photos, out, _config())
    assert (figures["fitted"], figures["failed"], figures["skipped"]) == (0, 0, NUM_FACES + 2)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == before
    with pytest.raises(ValueError, match="other settings"):
        run_fit_job(photos, out, _config(image_size=128))


def test_resume_accepts_a_config_written_before_a_setting_existed(landmark_run, photos, tmp_path):
    """A folder fitted by an earlier version, whose config.yaml lacks settings added since (at their defaults,
    the old behaviour), resumes; one whose settings differ, or that names a setting this version lacks, does not."""
    out, _ = landmark_run
    copy = tmp_path / "older"
    shutil.copytree(out, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    del config["texture"]["optimizer"], config["texture"]["damping"]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    assert run_fit_job(photos, copy, _config())["skipped"] == NUM_FACES + 2
    with pytest.raises(ValueError, match="landmarks differ"):
        run_fit_job(photos, copy, _config(landmarks=replace(FAST, rounds=3)))
    # stage-2 settings do not touch a landmarks-only folder's results (stage 2 added a setting: it still resumes)
    assert run_fit_job(photos, copy, _config(texture=TextureFitConfig(damping=0.1)))["skipped"] == NUM_FACES + 2
    with_texture = dict(_config().to_dict(), stages=["landmarks", "texture"])
    assert fit_settings(with_texture)["texture"] == with_texture["texture"]
    config["landmarks"]["retired_setting"] = 1
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="other settings"):
        run_fit_job(photos, copy, _config())


def test_texture_stage_from_list_file_with_meshes(photos, tmp_path, model):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two faces\n{os.path.relpath(photos / 'face_0.png', tmp_path)}\n\n"
                       f"{os.path.relpath(photos / 'face_1.png', tmp_path)}\n")
    assert len(list_fit_inputs(listing)) == 2
    config = _config(stages=("landmarks", "texture"), image_size=96, save_meshes="ply",
                     texture=TextureFitConfig(rounds=1, steps_per_group=1, uv_size=32))
    figures = run_fit_job(listing, tmp_path / "out", config)
    assert figures["fitted"] == 2
    table = read_fit_results(tmp_path / "out")
    assert table["params"].shape == (2, model.layout.full_size)
    assert table["param_names"] == model.layout.names(include_fitting=True)
    assert np.isfinite(table["params"]).all() and np.isfinite(table["energy/texture/texture"]).all()
    assert not table["flag/diverged"].any()
    meshes = sorted((tmp_path / "out" / "meshes").rglob("*.ply"))
    assert len(meshes) == 2 and meshes[0].read_bytes().startswith(b"ply\nformat binary_little_endian")


def test_obj_meshes(photos, tmp_path, model):
    face_0 = [item for item in list_fit_inputs(photos) if item.key == "face_0.png"]
    run_fit_job(face_0, tmp_path, _config(save_meshes="obj"))
    vertices, faces = read_obj(tmp_path / "meshes" / "face_0.png.obj")
    assert vertices.shape == (model.num_vertices, 3) and len(faces) == len(model.triangles)


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from diffface.fitting import LandmarkFitConfig, job as fit_job

    real_savez, written = np.savez, []

    def savez(handle, **arrays):  # the third result: half a file on disk, then SIGKILL
        if len(written) == 2:
            handle.write(b"PK\\x03\\x04 half a record")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        written.append(1)
        real_savez(handle, **arrays)

    np.savez = savez
    config = fit_job.FitJobConfig(batch_size=2, num_workers=0, tensorboard=False, progress=False,
                                  landmarks=LandmarkFitConfig(rounds=2, steps_per_group=2, focal_px=700.0))
    fit_job.run_fit_job(sys.argv[1], sys.argv[2], config)
""")


def test_sigkill_leaves_no_half_written_result(photos, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(photos), str(out)], capture_output=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr.decode()[-2000:]
    results = sorted((out / "results").glob("*.npz"))
    assert len(results) == 2 and all(read_fit_result(p)["format"] == RESULT_FORMAT for p in results)
    assert list((out / "results").glob(".*.tmp"))  # the half-written file kept its temporary name
    figures = run_fit_job(photos, out, _config())
    # done before the kill: corrupt.png (recorded as bad) and the first two faces
    assert (figures["skipped"], figures["fitted"], figures["failed"]) == (3, NUM_FACES - 2, 1)
    assert not list((out / "results").glob(".*.tmp"))
    assert len(read_fit_results(out)["key"]) == NUM_FACES


def test_config_yaml_round_trip_and_overrides(tmp_path):
    config = FitJobConfig().with_overrides(["texture.norm=l1", "landmarks.rounds=3", "stages=landmarks,texture",
                                            "batch_size=8", "texture.learning_rates.albedo=0.2",
                                            "detector_options.annotation_dir=/data/pts", "landmarks.r_exp=1"])
    assert config.texture.norm == "l1" and config.landmarks.rounds == 3 and config.batch_size == 8
    assert config.stages == ("landmarks", "texture") and config.landmarks.r_exp == 1.0
    assert config.texture.learning_rates["albedo"] == 0.2 and config.texture.learning_rates["pose"] == 0.004
    assert config.detector_options == {"annotation_dir": "/data/pts"}
    config.to_yaml(tmp_path / "c.yaml")
    assert FitJobConfig.from_yaml(tmp_path / "c.yaml") == config
    for bad, message in [("texture.norm=l3", "norm"), ("texture.nrom=l1", "unknown config key 'texture.nrom'"),
                         ("batch_size=many", "integer"), ("stages=texture", "stages"), ("nokey", "key=value")]:
        with pytest.raises(ValueError, match=message):
            FitJobConfig().with_overrides([bad])
    (tmp_path / "bad.yaml").write_text("landmarks: {rounds: 2, wrong: 1}\n")
    with pytest.raises(ValueError, match="bad.yaml.*landmarks.wrong"):
        FitJobConfig.from_yaml(tmp_path / "bad.yaml")
    # settings that need each other, in any order
    gauss_newton = ["stages=landmarks,texture", "texture.optimizer=gauss_newton", "texture.r_id=0.001",
                    "texture.term=image"]
    assert FitJobConfig().with_overrides(gauss_newton).texture.optimizer == "gauss_newton"
    # frames tied together take one step per subject (fitting/gauss_newton_ties.py)
    assert FitJobConfig().with_overrides(gauss_newton + ["group_by=folder"]).group_by == "folder"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_matches_single_process(landmark_run, photos, tmp_path):
    out = tmp_path / "dist"
    (tmp_path / "cfg.yaml").write_text("landmarks: {rounds: 2, steps_per_group: 2, focal_px: 700.0}\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "diffface.cli.main", "fit", str(photos), "--landmarks", "pts",
               "--stages", "landmarks", "--out", str(out), "--config", str(tmp_path / "cfg.yaml"),
               "--batch-size", "4", "--workers", "0", "--set", "tensorboard=false", "--json"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "log_rank0.jsonl").is_file() and (out / "log_rank1.jsonl").is_file()
    ranks = {json.loads(line)["rank"] for name in ("log_rank0.jsonl", "log_rank1.jsonl")
             for line in (out / name).read_text().splitlines()}
    assert ranks == {0, 1}
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["results"], summary["failed"]) == (NUM_FACES, 2) and len(summary["ranks"]) == 2
    single, merged = read_fit_results(landmark_run[0]), read_fit_results(out)
    assert list(single["key"]) == list(merged["key"])
    # stage 1 runs in float64, so batch mates and thread counts change an image's fit only by rounding
    # (amplified a little along the flat directions of the landmark energy)
    np.testing.assert_allclose(merged["energy/landmarks/total"], single["energy/landmarks/total"], rtol=1e-5)
    np.testing.assert_allclose(merged["landmarks"], single["landmarks"], atol=0.02)
    np.testing.assert_allclose(merged["params"], single["params"], rtol=1e-3, atol=0.02)
    assert [f["key"] for f in merged["failed"]] == [f["key"] for f in single["failed"]]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder or list file" in capsys.readouterr().err
    assert cli_main(["fit", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "texture.norm=l3"]) == 2
    assert "norm" in capsys.readouterr().err


FAST_YAML = "landmarks: {rounds: 2, steps_per_group: 2, focal_px: 700.0}\n"


def _fit_cli(folder: Path, out: Path, tmp_path: Path, *options: str) -> int:
    (tmp_path / "fast.yaml").write_text(FAST_YAML)
    return cli_main(["fit", str(folder), "--out", str(out), "--config", str(tmp_path / "fast.yaml"), "--workers", "0",
                     "--no-tensorboard", "--json", *options])


def test_huge_tiny_and_impossible_images_are_recorded_and_the_rest_fitted(photos, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in [(0, "face_0.png"), (1, "face_1.ppm")]:  # Netpbm photos are read too
        Image.open(photos / f"face_{i}.png").convert("RGB").save(folder / name)
        (folder / f"{Path(name).stem}.pts").write_bytes((photos / f"face_{i}.pts").read_bytes())
    Image.new("1", (20000, 10000)).save(folder / "huge.png")  # a decompression bomb for Pillow
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "one_pixel.png")
    (folder / "one_pixel.pts").write_bytes((photos / "face_2.pts").read_bytes())
    landmarks = np.loadtxt(photos / "face_3.pts", skiprows=3, max_rows=68)
    Image.open(photos / "face_3.png").save(folder / "far.png")
    write_pts(folder / "far.pts", landmarks + 1e6)
    Image.open(photos / "face_4.png").save(folder / "speck.png")
    write_pts(folder / "speck.pts", (landmarks - landmarks.mean(0)) * 0.02 + 80)
    (folder / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    assert _fit_cli(folder, out, tmp_path) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["results"], printed["failed"], printed["left_out"]) == (2, 4, 1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["left_out"] == {".txt": 1}
    reasons = {Path(f["image"]).name: f["reason"] for f in summary["failures"]}
    assert "image too large (20000x10000 = 200,000,000 pixels, the limit is 89,478,485" in reasons["huge.png"]
    assert "image too small to hold a face (1x1 pixels" in reasons["one_pixel.png"]
    assert "68 of 68 landmarks lie outside the 160x160 image" in reasons["far.png"]
    assert "face too small" in reasons["speck.png"]
    assert sorted(p.name for p in (out / "results").glob("*.npz")) == ["face_0.png.npz", "face_1.ppm.npz"]
    # the limits are settings: a larger pixel limit reads the huge image (which has no landmarks)
    assert FitJobConfig().with_overrides(["limits.min_face_px=2"]).limits.min_face_px == 2.0
    assert _fit_cli(folder, tmp_path / "out2", tmp_path, "--max-image-pixels", "0", "--set",
                    "limits.min_face_px=1") == 0
    reasons = {Path(f["image"]).name: f["reason"]
               for f in json.loads((tmp_path / "out2" / "summary.json").read_text())["failures"]}
    assert "no landmark annotation" in reasons["huge.png"] and "speck.png" not in reasons


def test_unreadable_result_is_named_and_fitted_again_on_resume(landmark_run, photos, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(landmark_run[0], out)
    garbage, truncated = out / "results" / "face_1.png.npz", out / "results" / "face_2.png.npz"
    garbage.write_bytes(b"PK\x03\x04 not a zip at all")
    truncated.write_bytes(truncated.read_bytes()[:300])
    table = read_fit_results(out)  # a reader names the bad files instead of raising
    unreadable = {f["key"]: f["reason"] for f in table["failed"] if f["error"] == "UnreadableResult"}
    assert set(unreadable) == {"face_1.png", "face_2.png"} and str(garbage) in unreadable["face_1.png"]
    with pytest.raises(ValueError, match="face_1.png.npz: unreadable fit result"):
        read_fit_result(garbage)
    (tmp_path / "fast.yaml").write_text(FAST_YAML)
    assert cli_main(["fit", str(photos), "--out", str(out), "--config", str(tmp_path / "fast.yaml"), "--workers", "0",
                     "--no-tensorboard", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"fitted again: {garbage}: unreadable fit result" in printed and f"fitted again: {truncated}" in printed
    log = [json.loads(line) for line in (out / "log_rank0.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in log if r["status"] == "refit") == ["face_1.png", "face_2.png"]
    table = read_fit_results(out)
    assert len(table["key"]) == NUM_FACES and len(table["failed"]) == 2  # the two bad photos only
    np.testing.assert_allclose(read_fit_result(garbage)["params"],
                               read_fit_result(landmark_run[0] / "results" / "face_1.png.npz")["params"], atol=0.05)


def test_fit_exits_1_when_every_image_failed(photos, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("corrupt.png", "no_landmarks.png"):
        (folder / name).write_bytes((photos / name).read_bytes())
    assert _fit_cli(folder, tmp_path / "out", tmp_path) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"diffface fit: error: all 2 images failed (reasons in {tmp_path / 'out' / 'summary.json'})"]


ORPHAN_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from diffface.fitting import job as fit_job
    from diffface.fitting.job import inputs

    def slow_load(self, item):  # a worker busy in a long item: torch's own parent check never runs
        (Path(sys.argv[3]) / f"{os.getpid()}.pid").write_text("")
        time.sleep(120)

    inputs.FitImageDataset._load = slow_load
    config = fit_job.FitJobConfig(batch_size=1, num_workers=2, tensorboard=False, progress=False)
    fit_job.run_fit_job(sys.argv[1], sys.argv[2], config)
""")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie left for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dataloader_workers_die_with_a_job_killed_by_sigkill(photos, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    job = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, str(photos), str(tmp_path / "out"), str(pids)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while len(workers) < 2 and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
            workers = [int(p.stem) for p in pids.glob("*.pid")]
        assert len(workers) == 2, job.stderr.read().decode()[-2000:] if job.poll() is not None else "no workers"
        job.kill()  # SIGKILL: the job cannot clean up
        job.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in workers if _alive(pid)]
        assert not survivors, f"workers {survivors} outlived the killed job"
    finally:
        job.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
