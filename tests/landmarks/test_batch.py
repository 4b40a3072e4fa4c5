import json

import numpy as np
from PIL import Image

from diffface.cli.main import main
from diffface.landmark_io import read_pts, write_pts
from diffface.landmarks import FaceDetection, LandmarkDetector, LandmarkJobConfig, landmark_images


class TwoFaces(LandmarkDetector):
    name = "two"

    def detect(self, image, image_path=None):
        rng = np.random.default_rng(0)
        return [FaceDetection(rng.uniform(0, 10, (68, 2)), [0, 0, 10, 10]),
                FaceDetection(rng.uniform(20, 60, (68, 2)), [20, 20, 60, 60])]


def _folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    points = rng.uniform(5, 55, (68, 2))
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    write_pts(folder / "a.pts", points)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(folder / "gray.jpg")   # no annotation
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder, points


def test_folder_job_writes_pts_records_failures_and_resumes(tmp_path):
    folder, points = _folder(tmp_path)
    out = tmp_path / "out"
    code = main(["landmarks", str(folder), "--detector", "pts", "--out", str(out), "--overlay", "--json"])
    assert code == 0
    report = json.loads((out / "landmarks_report.json").read_text())
    assert (report["ok"], report["failed"]) == (1, 2)
    reasons = {r["image"].split("/")[-1]: r["reason"] for r in report["failures"]}
    assert "broken.png" in reasons["broken.png"] and "not a readable image" in reasons["broken.png"]
    assert "no landmark annotation" in reasons["gray.jpg"]
    np.testing.assert_allclose(read_pts(out / "a.pts"), points, atol=1e-3)
    assert (out / "overlays" / "a.png").is_file() and (out / "a.json").is_file()
    assert len((out / "landmarks_log.jsonl").read_text().splitlines()) == 3
    # a second run skips what is done and retries the failures
    report = landmark_images(sorted(folder.glob("*.*g")), TwoFaces(), out)
    statuses = {r["image"].split("/")[-1]: r["status"] for r in report["records"]}
    assert statuses == {"a.png": "skipped", "gray.jpg": "ok", "broken.png": "failed"}


def test_all_faces_keeps_every_face_largest_first(tmp_path):
    folder, _ = _folder(tmp_path)
    out = tmp_path / "out"
    landmark_images([folder / "a.png"], TwoFaces(), out, LandmarkJobConfig(all_faces=True))
    assert read_pts(out / "a.pts").min() >= 20 and read_pts(out / "a_face1.pts").max() <= 10
    landmark_images([folder / "a.png"], TwoFaces(), tmp_path / "one")
    assert not (tmp_path / "one" / "a_face1.pts").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["landmarks", str(tmp_path / "missing"), "--detector", "pts", "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["landmarks", str(tmp_path / "empty"), "--detector", "pts", "--out", str(tmp_path / "o")]) == 2


def test_cli_fan_without_weights_says_what_to_download(tmp_path, capsys, optional_import, monkeypatch):
    optional_import("face_alignment", 'pip install "diffface[landmarks]"')
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))     # an empty cache
    folder, _ = _folder(tmp_path)
    assert main(["landmarks", str(folder), "--detector", "fan", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "http" in err and "torch_home" in err and "s3fd" in err


def test_cli_records_too_large_and_too_small_images_and_exits_1_when_all_failed(tmp_path, capsys):
    folder, points = _folder(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "tiny.ppm")
    write_pts(folder / "tiny.pts", points / 10)
    (folder / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    # 64 x 64 = 4096 pixels: over the limit given, so a.png is recorded as failed, unread
    assert main(["landmarks", str(folder), "--detector", "pts", "--out", str(out),
                 "--max-image-pixels", "4000"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (  # the lines before it are the progress bar's
        f"diffface landmarks: error: all 4 images failed (reasons in {out / 'landmarks_report.json'})")
    assert "left out 1 file that is not an image (.txt: 1)" in captured.out
    report = json.loads((out / "landmarks_report.json").read_text())
    reasons = {r["image"].split("/")[-1]: r["reason"] for r in report["failures"]}
    assert set(reasons) == {"a.png", "gray.jpg", "broken.png", "tiny.ppm"} and report["left_out"] == {".txt": 1}
    assert "image too large (64x64 = 4,096 pixels, the limit is 4,000" in reasons["a.png"]
    assert "tiny.ppm: image too small to hold a face (8x8 pixels" in reasons["tiny.ppm"]
    # with the default limit a.png is fine: one image landmarked is a success
    assert main(["landmarks", str(folder), "--detector", "pts", "--out", str(tmp_path / "o2"), "--json"]) == 0
