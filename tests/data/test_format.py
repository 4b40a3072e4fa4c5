"""The dataset format: atomic items, the index, curation decisions and the streaming reader."""

import numpy as np
import pytest
import torch

from diffface.data.format import (CURATION_NAME, ITEM_ARRAYS, DatasetFormatError, DatasetInfo, FaceDataset,
                                  ItemEntry, append_decision, read_decisions, read_info, select_items,
                                  write_index, write_info, write_item)


def _dataset(root, n=4):
    write_info(root, DatasetInfo(crop_size=8, model_name="m", model_fingerprint="f", id_dims=2, exp_dims=1,
                                 tex_dims=0, param_names=[f"p{i}" for i in range(12)], num_vertices=5))
    rng = np.random.default_rng(0)
    for i in range(n):
        arrays = {"params": rng.normal(size=12), "vertices": rng.normal(size=(5, 3)),
                  "projections": rng.normal(size=(5, 2)), "landmarks": rng.normal(size=(68, 2))}
        write_item(root, f"item{i}", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), arrays)
    write_index(root, [ItemEntry(f"item{i}", "val" if i == 0 else "train") for i in range(n)])


def test_reader_returns_what_was_written(tmp_path):
    _dataset(tmp_path)
    dataset = FaceDataset(tmp_path, split="train")
    assert len(dataset) == 3 and len(FaceDataset(tmp_path, split="val")) == 1
    item = dataset[0]
    assert item["image"].shape == (3, 8, 8) and 0 <= float(item["image"].min()) <= float(item["image"].max()) <= 1
    assert item["params"].shape == (12,) and item["vertices"].shape == (5, 3) and item["projections"].shape == (5, 2)
    assert read_info(tmp_path).num_vertices == 5


@pytest.mark.parametrize("load_ground_truth", [True, False])
def test_preloaded_reader_returns_what_streaming_returns(tmp_path, load_ground_truth):
    _dataset(tmp_path, n=5)
    append_decision(tmp_path, "item2", "reject")
    streamed = FaceDataset(tmp_path, split="train", load_ground_truth=load_ground_truth)
    preloaded = FaceDataset(tmp_path, split="train", load_ground_truth=load_ground_truth, preload=True)
    assert len(preloaded) == len(streamed) == 3 and preloaded.arrays["crops"].dtype == np.uint8
    for i in range(len(streamed)):
        a, b = streamed[i], preloaded[i]
        assert a.keys() == b.keys() and a["name"] == b["name"]
        for key in a.keys() - {"name"}:
            assert torch.equal(a[key], b[key]), key


def test_rejected_items_leave_the_reader_and_undo_brings_them_back(tmp_path):
    _dataset(tmp_path)
    append_decision(tmp_path, "item1", "reject")
    assert [e.name for e in select_items(tmp_path, "train")] == ["item2", "item3"]
    append_decision(tmp_path, "item1", "unreviewed")
    assert len(FaceDataset(tmp_path)) == 3


def test_torn_decision_line_is_ignored(tmp_path):
    _dataset(tmp_path)
    append_decision(tmp_path, "item2", "reject")
    with open(tmp_path / CURATION_NAME, "a") as handle:
        handle.write('{"name": "item3", "deci')
    assert read_decisions(tmp_path) == {"item2": "reject"}


def test_decision_after_a_torn_line_is_read_back(tmp_path):
    """The next decision ends the torn line first instead of being glued to it (and dropped with it)."""
    _dataset(tmp_path)
    append_decision(tmp_path, "item2", "reject")
    with open(tmp_path / CURATION_NAME, "a") as handle:
        handle.write('{"name": "item3", "deci')
    append_decision(tmp_path, "item1", "reject")
    assert read_decisions(tmp_path) == {"item2": "reject", "item1": "reject"}
    append_decision(tmp_path, "item3", "keep")  # an intact last line gets no blank line before the next one
    lines = (tmp_path / CURATION_NAME).read_text().split("\n")
    assert len(lines) == 5 and lines[1] == '{"name": "item3", "deci' and lines[-1] == ""
    assert read_decisions(tmp_path) == {"item2": "reject", "item1": "reject", "item3": "keep"}


def test_bad_inputs_name_the_culprit(tmp_path):
    with pytest.raises(DatasetFormatError, match="dataset.json"):
        read_info(tmp_path)
    with pytest.raises(ValueError, match="missing arrays"):
        write_item(tmp_path, "x", np.zeros((8, 8, 3), np.uint8), {"params": np.zeros(3)})
    with pytest.raises(ValueError, match="split"):
        write_index(tmp_path, [ItemEntry("x", "test")])
    with pytest.raises(ValueError, match="decision"):
        append_decision(tmp_path, "x", "maybe")
    assert set(ITEM_ARRAYS) == {"params", "vertices", "projections", "landmarks"}
