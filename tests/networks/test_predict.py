"""``predict`` on a folder: bad images are recorded with the reason and the good ones predicted."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffface.cli.main import main as cli_main
from diffface.landmark_io import write_pts
from diffface.networks import FaceRegressor, ModelIdentity, create_model, save_checkpoint
from diffface.networks.predict import REPORT_NAME, PredictConfig, predict_images
from diffface.params import ParamLayout, ParamNormalizer


@pytest.fixture
def regressor():
    torch.manual_seed(0)
    layout = ParamLayout(5, 3)
    network = create_model("mobileface", width=4, num_outputs=layout.network_size).eval()
    normalizer = ParamNormalizer(torch.zeros(layout.network_size), torch.ones(layout.network_size))
    return FaceRegressor(network, normalizer, layout, ModelIdentity("tiny", "abc123", ""), "mobileface",
                         {"width": 4, "num_outputs": layout.network_size, "input_size": 96}, 96).eval()


def _photo(folder, name, size=(120, 100), landmarks=None):
    rng = np.random.default_rng(len(name))
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / name)
    if landmarks is not None:
        write_pts(folder / f"{name.rsplit('.', 1)[0]}.pts", landmarks)


def _face():
    return np.stack([np.linspace(30, 80, 68), np.linspace(40, 90, 68)], 1)


def test_bad_images_of_a_folder_are_recorded_and_the_rest_predicted(regressor, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos, "good.png", landmarks=_face())
    _photo(photos, "netpbm.ppm", landmarks=_face())
    _photo(photos, "no_pts.png")
    _photo(photos, "far.png", landmarks=_face() + 1e6)
    _photo(photos, "tiny.png", size=(4, 4), landmarks=_face() / 20)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    result = predict_images(regressor, photos, out, PredictConfig(meshes="none", batch_size=2))
    assert [p.name for p in result.written] == ["good.npz", "netpbm.npz"]
    reasons = {f["image"].rsplit("/", 1)[-1]: f["reason"] for f in result.failures}
    assert set(reasons) == {"no_pts.png", "far.png", "tiny.png", "broken.jpg"}
    assert "no landmark annotation" in reasons["no_pts.png"] and "not a readable image" in reasons["broken.jpg"]
    assert "landmarks lie outside the 100x120 image" in reasons["far.png"]
    assert "image too small to hold a face (4x4 pixels" in reasons["tiny.png"]
    report = json.loads((out / REPORT_NAME).read_text())
    assert (report["images"], report["ok"], report["failed"], report["left_out"]) == (6, 2, 4, {".txt": 1})
    assert np.load(out / "good.npz")["params"].shape == (17,)


def test_cli_predict_reports_failures_and_exits_1_when_none_could_be_used(regressor, tmp_path, capsys):
    checkpoint = save_checkpoint(tmp_path / "model.pt", regressor, step=0)
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos, "no_pts.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    assert cli_main(["predict", str(checkpoint), str(photos), "--out", str(out), "--meshes", "none"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"diffface predict: error: all 2 images failed (reasons in {out / REPORT_NAME})"]
    assert "skipped: " in captured.out and "broken.png: not a readable image" in captured.out
    _photo(photos, "good.png", landmarks=_face())
    assert cli_main(["predict", str(checkpoint), str(photos), "--out", str(out), "--meshes", "none", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["images"], figures["predicted"], figures["failed"]) == (3, 1, 2)
    # the pixel limit is an option: over it, the image is recorded unread
    assert cli_main(["predict", str(checkpoint), str(photos / "good.png"), "--out", str(out), "--meshes", "none",
                     "--max-image-pixels", "1000"]) == 2
    assert "good.png: image too large (100x120 = 12,000 pixels, the limit is 1,000" in capsys.readouterr().err
