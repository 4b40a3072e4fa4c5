"""``diffface build-dataset`` and ``diffface curate`` from the command line."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from diffface.cli.main import main
from diffface.data.format import FaceDataset, append_decision, read_index


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "S"
    assert main(["synth", "--n", "3", "--image-size", "64", "--seed", "1", "--out", str(out), "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def cli_dataset(synth_folder, tmp_path_factory):
    """``(dataset, printed summary)`` of one `diffface build-dataset` run."""
    out = tmp_path_factory.mktemp("cli") / "D"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["build-dataset", str(synth_folder), "--out", str(out), "--crop-size", "48",
                     "--val-fraction", "0.34", "--set", "preview_size=64", "--json"])
    assert code == 0
    return out, json.loads(stdout.getvalue())


def test_build_dataset_then_export_decisions(synth_folder, cli_dataset, tmp_path, capsys):
    built, summary = cli_dataset
    out = tmp_path / "D"
    shutil.copytree(built, out)
    assert summary["items"] == 3 and summary["built"] == 3 and (summary["train"], summary["val"]) == (2, 1)
    assert FaceDataset(out, split=None)[0]["image"].shape == (3, 48, 48)
    assert "crop_size: 48" in (out / "build.yaml").read_text()
    names = [e.name for e in read_index(out)]
    append_decision(out, names[0], "reject")
    assert main(["curate", str(out), "--export", str(tmp_path / "rejected.txt"), "--decision", "reject"]) == 0
    assert (tmp_path / "rejected.txt").read_text() == f"{names[0]}\n"
    assert "1 rejected" in capsys.readouterr().out
    # a second run resumes
    assert main(["build-dataset", str(synth_folder), "--out", str(out), "--crop-size", "48", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed"] == 3


def test_curate_serves_on_localhost_and_prints_the_url(cli_dataset):
    out, _ = cli_dataset
    process = subprocess.Popen([sys.executable, "-m", "diffface", "curate", str(out), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = line.split("open ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and "3 items" in line
        base, token = url.split("?token=")
        with urllib.request.urlopen(urllib.request.Request(base + "api/items", headers={"X-Curation-Token": token}),
                                    timeout=10) as response:
            items = json.loads(response.read())["items"]
        assert len(items) == 3 and all(it["preview"] for it in items)
        with pytest.raises(urllib.error.HTTPError, match="403"):  # the API answers only with the printed token
            urllib.request.urlopen(base + "api/items", timeout=10)
    finally:
        process.terminate()
        process.wait(10)


def test_bad_input_gives_one_clear_line(tmp_path, capsys):
    assert main(["build-dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "D")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "Traceback" not in err and err.count("\n") == 1
    assert main(["curate", str(tmp_path)]) == 2
    assert "dataset.json" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["build-dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "D")]) == 2
    assert "neither fit results" in capsys.readouterr().err
    assert main(["build-dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "D"), "--set", "crop_sise=3"]) == 2
    assert "crop_sise" in capsys.readouterr().err
