import json

import numpy as np
from PIL import Image

from diffface.cli.main import main
from diffface.landmark_io import read_pts


def test_synth_writes_a_benchmark_and_prints_its_summary(tmp_path, capsys):
    out = tmp_path / "S"
    assert main(["synth", "--n", "3", "--image-size", "64", "--seed", "3", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["faces"] == 3 and summary["image_size"] == 64
    assert summary["mesh_vertices"] > summary["model_vertices"] and summary["mesh_faces"] != summary["model_faces"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["scene"]["seed"] == 3 and len(manifest["samples"]) == 3
    for sample in manifest["samples"]:
        assert np.asarray(Image.open(out / sample["image"])).shape == (64, 64, 3)
        assert read_pts(out / sample["landmarks"]).shape == (68, 2)
        assert (out / sample["mesh"]).stat().st_size > 0 and (out / sample["landmarks_3d"]).is_file()
    assert np.load(out / "params.npz")["params"].shape[0] == 3


def test_synth_bad_arguments_give_one_clear_line(tmp_path, capsys):
    assert main(["synth", "--n", "0", "--out", str(tmp_path / "S")]) == 2
    err = capsys.readouterr().err
    assert "--n" in err and "Traceback" not in err
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["synth", "--n", "1", "--image-size", "32", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(tmp_path) in err
    assert (tmp_path / "mine.txt").read_text() == "keep"
