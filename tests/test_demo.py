"""``diffface demo`` end to end at tiny sizes: every step's outputs, sensible figures, a self-contained
report that a real browser renders, and command lines the CLI accepts."""

from __future__ import annotations

import contextlib
import html
import io
import json
import math
import shlex
import time
from html.parser import HTMLParser
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffface.cli.main import COMMANDS, build_parser, main
from diffface.demo import METHODS, STEP_OUTPUTS, STEPS, DemoConfig, DemoStepError, run_demo
from diffface.landmark_io import write_pts
from diffface.landmarks.annotations import read_landmark_file
from diffface.app.report_html import D_DEFINITION
from diffface.threads import torch_threads

QUICK_HELDOUT = DemoConfig.quick().heldout_faces


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict, dict, float]:
    """The reduced demo run once through the CLI: (folder, report.json, the printed JSON, wall-clock seconds)."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--out", str(out), "--quick", "--json"]) == 0
    wall = time.perf_counter() - started
    return out, json.loads((out / "report.json").read_text()), json.loads(printed.getvalue()), wall


def _row(report: dict, method: str) -> dict:
    return next(row for row in report["table"] if row["method"] == method)


def test_every_step_ran_and_wrote_its_outputs(demo):
    out, report, printed, wall = demo
    assert printed == report
    assert list(report["steps"]) == list(STEPS)
    for name, relative in STEP_OUTPUTS.items():
        assert (out / relative).exists(), f"step {name} wrote no {relative}"
    # the steps are timed back to back inside the run, which the CLI call contains; rounding: 0.01 s a step
    seconds = {name: report["steps"][name]["seconds"] for name in STEPS}
    assert report["seconds_total"] <= wall
    assert 0.8 * report["seconds_total"] <= sum(seconds.values()) <= report["seconds_total"] + 0.01 * len(STEPS)
    assert min(seconds["fit"], seconds["train"], seconds["export"]) > 0.1  # work that cannot take no time
    assert len(list((out / "inputs/heldout/meshes").glob("*.obj"))) == QUICK_HELDOUT
    assert len(list((out / "landmarks/train").glob("*.pts"))) == report["steps"]["inputs"]["train"]["faces"]
    for fit in ("train", "heldout_landmarks", "heldout_texture"):
        assert (out / "fits" / fit / "summary.json").is_file()
    assert len(list((out / "fits/heldout_texture/meshes").glob("*.obj"))) == QUICK_HELDOUT
    assert (out / "train/model.pt").is_file() and (out / "export/model.pt").is_file()
    assert (out / "export/model.onnx").stat().st_size > 10_000
    assert len(list((out / "predict").glob("*.npz"))) == len(list((out / "predict").glob("*.obj"))) == QUICK_HELDOUT
    assert (out / "evaluate/ced.png").is_file() and (out / "figures/grid.png").is_file()
    grid = Image.open(out / "figures/grid.png")
    assert grid.size[0] == 4 * 96 and np.asarray(grid).std() > 10  # photo + three renders per row, not blank
    assert json.loads((out / "config.json").read_text())["train_faces"] == DemoConfig.quick().train_faces


def test_curation_rejects_exactly_the_flagged_items(demo):
    out, report, *_ = demo
    index = json.loads((out / "dataset/index.json").read_text())["items"]
    flagged = {item["name"] for item in index if item["flags"]}
    decisions = [json.loads(line) for line in (out / "dataset/curation.jsonl").read_text().splitlines()] \
        if flagged else []
    assert {d["name"] for d in decisions} == flagged and all(d["decision"] == "reject" for d in decisions)
    curate = report["steps"]["curate"]
    assert curate["rejected"] == len(flagged) and curate["kept"] == len(index) - len(flagged)


def test_figures_are_finite_and_fits_beat_the_mean_shape(demo):
    _, report, *_ = demo
    assert [row["method"] for row in report["table"]] == list(METHODS)
    for row in report["table"]:
        assert row["n"] == QUICK_HELDOUT and row["n_failed"] == 0, row
        for key in ("auc", "median", "mean_mm", "median_mm"):
            assert math.isfinite(row[key]) and row[key] >= 0, (row["method"], key)
        assert 0 <= row["auc"] <= 1
    mean_shape = _row(report, "mean shape")
    assert mean_shape["landmark_rms_px"] is None
    for method in ("landmark fit", "texture fit"):
        fit = _row(report, method)
        assert fit["mean_mm"] < mean_shape["mean_mm"] and fit["auc"] > mean_shape["auc"], method
        assert fit["landmark_rms_px"] < 5.0  # the synthetic landmarks carry about 2 px of noise
    assert math.isfinite(_row(report, "network")["landmark_rms_px"])
    for name, export in report["steps"]["export"]["formats"].items():
        assert export["parity_passed"] and export["parity_max_abs_error"] < 1e-2, name


class _Resources(HTMLParser):
    """Every tag and the attributes that could load something."""

    def __init__(self):
        super().__init__()
        self.tags, self.sources = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.sources += [(tag, name, value) for name, value in attrs if name in ("src", "href", "srcset", "data")]


def test_report_html_is_self_contained(demo):
    out, *_ = demo
    page = (out / "report.html").read_text(encoding="utf-8")
    parser = _Resources()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    images = [value for tag, name, value in parser.sources if tag == "img"]
    assert len(images) == 2 and all(v.startswith("data:image/png;base64,") for v in images)
    assert [s for s in parser.sources if s[0] != "img"] == []
    assert "http://" not in page and "https://" not in page and "url(" not in page
    for method in METHODS:
        assert f"<td>{method}</td>" in page
    figures = page[page.index("<h2>Figures</h2>"):page.index("<h2>Held-out photos</h2>")]
    assert html.escape(D_DEFINITION) in figures and "interocular" not in figures  # d as the evaluation computes it


def test_printed_table_defines_d(demo, capsys):
    from diffface.cli.demo import print_table

    _, report, *_ = demo
    print_table(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["method", "n", "AUC"] and D_DEFINITION in lines


def test_commands_are_accepted_by_the_cli(demo):
    """Every reproduce command parses, and its settings resolve (e.g. ``--set`` values have the right types)."""
    out, report, *_ = demo
    assert set(report["commands"]) == set(STEPS) - {"figures"}
    parser = build_parser()
    checked = 0
    for step, commands in report["commands"].items():
        for command in commands:
            words = shlex.split(command, comments=True)
            if words and words[0] == "diffface":
                args = parser.parse_args(words[1:])
                module = import_module(f"diffface.cli.{COMMANDS[args.command]}")
                if hasattr(module, "resolve_config"):
                    module.resolve_config(args)
                checked += 1
            else:
                assert not words, command  # only comments besides diffface commands
    assert checked >= 10
    assert str(out / "fits/heldout_texture") in " ".join(report["commands"]["evaluate"])


def test_reproduce_commands_redo_the_run(demo, tmp_path):
    """The report's commands, run as printed (into another folder), redo the demo: the same dataset, the same
    curation and the same evaluation table."""
    out, report, *_ = demo
    again = tmp_path / "again"
    with torch_threads(DemoConfig.quick().threads), contextlib.redirect_stdout(io.StringIO()):
        for step, commands in report["commands"].items():
            for command in commands:
                words = [w.replace(str(out), str(again)) for w in shlex.split(command, comments=True)]
                if words:
                    assert main(words[1:]) == 0, command
    for name in ("dataset/index.json", "dataset/curation.jsonl"):
        assert (again / name).read_text().replace(str(again), str(out)) == (out / name).read_text(), name
    redone = json.loads((again / "evaluate/report.json").read_text())["methods"]
    for method, row in report["steps"]["evaluate"]["methods"].items():
        assert redone[method.replace(" ", "-")]["auc"] == pytest.approx(row["auc"], abs=1e-6), method


def test_a_failing_step_is_named(tmp_path):
    empty = tmp_path / "no_photos"
    empty.mkdir()
    with pytest.raises(DemoStepError, match="demo step 'inputs' failed"):
        run_demo(tmp_path / "out", DemoConfig.quick(images=str(empty)))


def test_a_folder_that_is_not_a_demo_is_never_cleared(tmp_path):
    keep = tmp_path / "dataset" / "precious.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    with pytest.raises(ValueError, match="not a previous demo"):
        run_demo(tmp_path, DemoConfig.quick())
    assert keep.read_text() == "mine"


def test_cli_rejects_landmarks_without_images(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--landmarks", "dlib"]) == 2
    assert "--landmarks applies to --images" in capsys.readouterr().err


def test_photos_without_ground_truth(demo, tmp_path):
    """The user's-photos path: photos of several sizes, one without landmarks (set aside, not fatal); no
    synthesis and no evaluation, but the fits and predictions are shown and their 2D error measured."""
    source, *_ = demo
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {8: (150, 120), 9: (80, 80)}  # the two held out (the last two by name): other sizes and shapes
    for k, png in enumerate(sorted((source / "inputs/train/images").glob("*.png"))[:10]):
        image, landmarks = Image.open(png), read_landmark_file(png.with_suffix(".pts"))[0]
        if k in sizes:
            landmarks = landmarks * np.array(sizes[k]) / np.array(image.size)
            image = image.resize(sizes[k])
        image.save(photos / png.name)
        if k != 0:
            write_pts(photos / f"{png.stem}.pts", landmarks)
    config = DemoConfig.quick(images=str(photos), heldout_faces=2, texture_rounds=0, train_steps=2,
                              export_formats=("torchscript",), val_fraction=0.4)
    out = tmp_path / "real"
    report = run_demo(out, config)
    assert report["ground_truth"] is False and set(report["steps"]["evaluate"]) == {"ground_truth", "seconds"}
    assert report["steps"]["landmarks"]["train"]["failed"] == 1
    assert [p.name for p in (out / "inputs/train/no_face").iterdir()] == ["face_0000.png"]
    assert [row["method"] for row in report["table"]] == ["landmark fit", "network"]
    assert all(row.get("auc") is None and math.isfinite(row["landmark_rms_px"]) for row in report["table"])
    assert report["table"][0]["landmark_rms_px"] < 5.0
    assert len(list((out / "predict").glob("*.npz"))) == report["steps"]["figures"]["photos"] == 2
    assert Image.open(out / "figures/grid.png").size == (3 * 150, 2 * 150)
    page = (out / "report.html").read_text()
    assert "no ground-truth 3D shape" in page and 'id="ced"' not in page
    assert "no ground truth" in " ".join(report["commands"]["evaluate"])


def test_report_renders_in_chromium(demo, chromium_path, tmp_path):
    from diffface.app.report_html import screenshot_report

    out, *_ = demo
    png = tmp_path / "report.png"
    state = screenshot_report(out / "report.html", png, str(chromium_path), full_page=True)
    assert state["title"] == "diffface demo report"
    images = {image["id"]: image for image in state["images"]}
    assert images["ced"]["complete"] and images["ced"]["naturalWidth"] > 0
    assert images["grid"]["naturalWidth"] == 4 * 96
    assert state["methods"] == list(METHODS)
    assert state["sections"][:2] == ["Figures", "Held-out photos"] and "Reproduce" in state["sections"]
    shot = np.asarray(Image.open(png).convert("RGB"))
    assert shot.shape[1] == 1200 and shot.shape[0] > 900 and shot.std() > 20  # a page, not a blank screen
