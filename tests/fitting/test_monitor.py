"""fitting.job.monitor: the per-rank jsonl log, the progress bar and the TensorBoard scalars and overlays."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffface.fitting.job import FitItem, FitJobConfig
from diffface.fitting.job.batch import BatchFit, fitted_landmarks
from diffface.fitting.job.monitor import RunLog, TensorBoardMonitor, progress_bar
from diffface.landmarks import crop_faces
from diffface.landmarks.crop import crop_transform
from diffface.lighting import default_lighting
from diffface.morphable_model import MorphableModel
from diffface.renderers import FaceRenderer
from diffface.report_images import to_uint8_image

SIZE = 48
OVERLAY_TAG = "overlay/observed_green_fitted_red__render"


# -- RunLog -----------------------------------------------------------------------------------------------
def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def test_run_log_appends_json_lines_flushed_at_once(tmp_path):
    path = tmp_path / "out" / "log_rank0.jsonl"  # the folder is created
    log = RunLog(path)
    log.write({"image": tmp_path / "a.png", "status": "ok", "rank": 0})
    assert json.loads(_lines(path)[0]) == {"image": str(tmp_path / "a.png"), "status": "ok", "rank": 0}
    log.write({"image": "b.png", "energy": 1.5})
    log.close()
    log = RunLog(path)  # a second run appends, with no blank line between
    log.write({"image": "c.png"})
    log.close()
    assert [json.loads(line)["image"] for line in _lines(path)[:-1]] == [str(tmp_path / "a.png"), "b.png", "c.png"]
    assert _lines(path)[-1] == ""


def test_run_log_closes_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"image": "a.png"}\n{"image": "b.p', encoding="utf-8")
    log = RunLog(path)
    log.write({"image": "c.png"})
    log.close()
    assert _lines(path) == ['{"image": "a.png"}', '{"image": "b.p', '{"image": "c.png"}', ""]
    empty = tmp_path / "empty.jsonl"
    empty.touch()
    log = RunLog(empty)
    log.write({"k": 1})
    log.close()
    assert empty.read_text() == '{"k": 1}\n'  # an empty file gets no leading newline


# -- progress bar -----------------------------------------------------------------------------------------
def test_progress_bar_starts_at_the_images_done(capsys):
    bar = progress_bar(10, 4, ("landmarks", "texture"), enabled=True)
    bar.update(2)
    assert (bar.total, bar.n, bar.disable) == (10, 6, False)
    bar.close()
    err = capsys.readouterr().err
    assert "fit (landmarks+texture)" in err and "6/10" in err
    quiet = progress_bar(5, 1, ("landmarks",), enabled=False)
    quiet.update(1)
    quiet.close()
    assert quiet.disable and capsys.readouterr().err == ""


# -- TensorBoard ------------------------------------------------------------------------------------------
def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture
def model(tiny_model_data):
    return MorphableModel(tiny_model_data)


def _fit(model, count: int) -> BatchFit:
    """A hand-made fitted batch whose faces lie inside a SIZE-pixel crop (beta and sh left None)."""
    g = torch.Generator().manual_seed(0)
    groups = replace(model.layout.zeros(count, include_fitting=False),
                     alpha_id=torch.randn(count, model.id_dims, generator=g) * 0.5,
                     translation=torch.tensor([[2.0 * i, -1.0, 600.0] for i in range(count)]),
                     angles=torch.randn(count, 3, generator=g) * 0.1,
                     focal=torch.full((count, 1), 250.0), principal_point=torch.full((count, 2), SIZE / 2))
    landmarks = fitted_landmarks(model, groups) + 1.0
    return BatchFit(crop_params=groups, params=groups, packed=model.layout.pack(groups), landmarks=landmarks,
                    energies={}, flags={}, landmarks_crop=landmarks)


def test_scalars_are_means_over_finite_energies(tmp_path, model):
    monitor = TensorBoardMonitor(tmp_path, model, FitJobConfig(image_size=SIZE))
    fit = replace(_fit(model, 3), energies={
        "landmarks/total": torch.tensor([1.0, float("nan"), 3.0]),
        "texture/total": torch.tensor([float("inf"), float("nan"), float("-inf")]),  # nothing finite: not logged
        "landmarks/id_prior": torch.tensor([0.5, 0.25, 0.75])})
    monitor.scalars(fit, images_per_s=12.5, step=3)
    monitor.scalars(replace(fit, energies={"landmarks/total": torch.tensor([4.0])}), images_per_s=10.0, step=4)
    monitor.close()
    acc = _events(tmp_path / "tensorboard")
    assert set(acc.Tags()["scalars"]) == {"energy/landmarks/total", "energy/landmarks/id_prior",
                                          "throughput/images_per_s"}
    assert [(e.step, e.value) for e in acc.Scalars("energy/landmarks/total")] == [(3, 2.0), (4, 4.0)]
    assert [(e.step, e.value) for e in acc.Scalars("energy/landmarks/id_prior")] == [(3, 0.5)]
    assert [(e.step, e.value) for e in acc.Scalars("throughput/images_per_s")] == [(3, 12.5), (4, 10.0)]


def _overlay_image(acc, index=-1) -> np.ndarray:
    event = acc.Images(OVERLAY_TAG)[index]
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_overlay_grid_of_crop_and_render_rows(tmp_path, model):
    count = 3
    fit = _fit(model, count)
    crops = torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    items = [FitItem(index=i, image=f"img{i}.png", key=f"img{i}", crop=crops[i]) for i in range(count)]
    monitor = TensorBoardMonitor(tmp_path, model, FitJobConfig(image_size=SIZE, overlay_samples=2))
    monitor.overlay(items, fit, step=7)
    monitor.close()
    acc = _events(tmp_path / "tensorboard")
    assert [e.step for e in acc.Images(OVERLAY_TAG)] == [7]
    grid = _overlay_image(acc)
    assert grid.shape == (2 * SIZE, 2 * SIZE, 3)  # overlay_samples rows of (crop | render)
    # the right column: the fit (mean albedo, default light) rendered over its crop
    params = replace(fit.crop_params.index(slice(0, 2)), beta=torch.zeros(2, model.tex_dims), sh=default_lighting(2))
    out = FaceRenderer(model, SIZE, backend="builtin")(params, crops[:2])
    mask = out.fragments.mask.numpy()
    assert 0.05 < mask.mean() < 0.95
    for b in range(2):
        right = grid[b * SIZE:(b + 1) * SIZE, SIZE:]
        expected = to_uint8_image(out.images[b].clamp(0, 1))
        assert np.abs(right.astype(int) - expected.astype(int)).max() <= 1
        assert np.array_equal(right[~mask[b]], to_uint8_image(crops[b])[~mask[b]])  # the crop shows around the face
        # the left column: the crop with landmark circles drawn, the crop itself elsewhere
        left = grid[b * SIZE:(b + 1) * SIZE, :SIZE]
        differs = (left != to_uint8_image(crops[b])).any(-1)
        assert 0 < differs.mean() < 0.5
        green = (left == (80, 255, 80)).all(-1)
        red = (left == (255, 60, 60)).all(-1)
        assert green.any() and red.any()


def test_overlay_rebuilds_a_missing_crop_from_the_photo(tmp_path, model):
    """Stage-1 jobs carry no crops: the crop is cut again from the photo through the stored crop matrix."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    box = torch.tensor([[30.0, 12.0, 94.0, 76.0]])  # 64 px square -> SIZE px crop
    crop = crop_faces(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, box, SIZE)[0][0]
    matrix = crop_transform(box.double(), SIZE).matrix[0].numpy()
    fit = _fit(model, 1)
    with_crop = FitItem(index=0, image=str(tmp_path / "photo.png"), key="photo", crop_matrix=matrix, crop=crop)
    without = replace(with_crop, crop=None)
    for name, item in (("given", with_crop), ("rebuilt", without)):
        monitor = TensorBoardMonitor(tmp_path / name, model, FitJobConfig(image_size=SIZE, overlay_samples=4))
        monitor.overlay([item], fit, step=1)
        monitor.close()
    given, rebuilt = (_overlay_image(_events(tmp_path / name / "tensorboard")) for name in ("given", "rebuilt"))
    assert given.shape == rebuilt.shape == (SIZE, 2 * SIZE, 3)  # one item: one row, fewer than overlay_samples
    assert np.abs(given.astype(int) - rebuilt.astype(int)).max() <= 2
    # and the crop is the right part of the photo: not a shifted or scaled one
    shifted = crop_faces(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, box + 4, SIZE)[0][0]
    assert np.abs(rebuilt[:, :SIZE].astype(int) - to_uint8_image(shifted).astype(int)).mean() > 20


def test_no_overlay_without_samples(tmp_path, model):
    fit = _fit(model, 1)
    item = FitItem(index=0, image="a.png", key="a", crop=torch.zeros(3, SIZE, SIZE))
    for name, samples, items in (("off", 0, [item]), ("empty", 4, [])):
        monitor = TensorBoardMonitor(tmp_path / name, model, FitJobConfig(image_size=SIZE, overlay_samples=samples))
        monitor.overlay(items, fit, step=1)
        monitor.scalars(fit, images_per_s=1.0, step=1)
        monitor.close()
        tags = _events(tmp_path / name / "tensorboard").Tags()
        assert tags["images"] == [] and tags["scalars"] == ["throughput/images_per_s"]
