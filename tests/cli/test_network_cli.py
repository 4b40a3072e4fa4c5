"""``diffface train`` and ``diffface predict`` end to end on a tiny dataset (smoke + camera mapping + errors)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffface.cli.main import main as cli_main
from diffface.camera import perspective_project
from diffface.data.format import DatasetInfo, ItemEntry, write_index, write_info, write_item
from diffface.landmark_io import write_pts
from diffface.mesh_io import read_obj
from diffface.model_format import save_model_npz
from diffface.morphable_model import MorphableModel


def _dataset(root: Path, model: MorphableModel, model_path: Path, count: int = 8) -> Path:
    g = torch.Generator().manual_seed(0)
    groups = replace(model.layout.zeros(count, include_fitting=False),
                     alpha_id=torch.randn(count, model.id_dims, generator=g),
                     translation=torch.tensor([0.0, 0.0, 600.0]).expand(count, 3) + torch.randn(count, 3, generator=g),
                     focal=torch.full((count, 1), 500.0) + torch.randn(count, 1, generator=g),
                     principal_point=torch.full((count, 2), 48.0))
    params = model.layout.pack(groups)
    vertices = model.shape(groups.alpha_id, groups.alpha_exp)
    projections, _ = perspective_project(vertices, groups.angles, groups.translation, groups.focal,
                                         groups.principal_point)
    write_info(root, DatasetInfo(96, model.name, model.fingerprint, model.id_dims, model.exp_dims, model.tex_dims,
                                 model.layout.names(), model.num_vertices))
    rng = np.random.default_rng(0)
    for i in range(count):
        write_item(root, f"f{i}", rng.integers(0, 255, (96, 96, 3), dtype=np.uint8),
                   {"params": params[i].numpy(), "vertices": vertices[i].numpy(),
                    "projections": projections[i].numpy(), "landmarks": np.zeros((68, 2))})
    write_index(root, [ItemEntry(f"f{i}", "val" if i >= count - 2 else "train") for i in range(count)])
    return root


@pytest.fixture
def trained_run(tmp_path, tiny_model_data):
    model_path = save_model_npz(tiny_model_data, tmp_path / "tiny.npz")
    dataset = _dataset(tmp_path / "dataset", MorphableModel(tiny_model_data), model_path)
    (tmp_path / "cfg.yaml").write_text("width: 4\nbatch_size: 6\nval_every: 2\ncheckpoint_every: 2\n"
                                       "num_workers: 0\noverlay_samples: 0\n")
    code = cli_main(["train", str(dataset), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "cfg.yaml"),
                     "--steps", "2", "--model", str(model_path), "--set", "tensorboard=false", "--json"])
    assert code == 0
    return tmp_path / "run"


def test_train_then_predict_cropped_and_landmarked_images(trained_run, tmp_path):
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert (config["steps"], config["width"], config["tensorboard"], config["batch_size"]) == (2, 4, False, 6)
    assert (trained_run / "model.pt").is_file() and (trained_run / "checkpoints" / "last.pt").is_file()
    crops = tmp_path / "crops"
    crops.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(crops / f"c{i}.png")
    assert cli_main(["predict", str(trained_run / "model.pt"), str(crops), "--out", str(tmp_path / "p1"),
                     "--cropped", "--batch-size", "2", "--json"]) == 0
    result = np.load(tmp_path / "p1" / "c0.npz")
    assert result["params"].shape == (17,) and len(result["param_names"]) == 17
    np.testing.assert_array_equal(result["params"], result["params_crop"])  # identity crop
    vertices, faces = read_obj(tmp_path / "p1" / "c0.obj")
    assert vertices.shape == (49, 3) and faces.shape == (72, 3)

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(photos / "big.png")
    landmarks = np.stack([np.linspace(100, 180, 68), np.linspace(60, 140, 68)], 1)  # an 80 px box at (100, 60)
    write_pts(photos / "big.pts", landmarks)
    assert cli_main(["predict", str(trained_run / "model.pt"), str(photos / "big.png"), "--out", str(tmp_path / "p2"),
                     "--landmarks", "pts", "--meshes", "ply", "--json"]) == 0
    result = np.load(tmp_path / "p2" / "big.npz")
    scale = result["crop_matrix"][0, 0]
    assert scale == pytest.approx(96 / (80 * 1.25))
    focal = list(result["param_names"]).index("focal")
    assert result["params"][focal] == pytest.approx(result["params_crop"][focal] / scale, rel=1e-5)
    assert (tmp_path / "p2" / "big.ply").is_file() and tuple(result["image_size"]) == (200, 300)


def test_errors_are_one_line_naming_the_culprit(trained_run, tmp_path, capsys):
    assert cli_main(["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "nothing" in capsys.readouterr().err
    assert cli_main(["train", str(tmp_path / "dataset"), "--out", str(tmp_path / "r"), "--set", "norm=l3"]) == 2
    assert "norm" in capsys.readouterr().err
    # resuming the run with another width or learning rate: one line naming both, config.yaml kept
    saved = (trained_run / "config.yaml").read_text()
    assert cli_main(["train", str(tmp_path / "dataset"), "--out", str(trained_run), "--config",
                     str(tmp_path / "cfg.yaml"), "--model", str(tmp_path / "tiny.npz"), "--steps", "4",
                     "--width", "8", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    lr = yaml.safe_load(saved)["lr"]
    assert err.count("\n") == 1 and "width 4 -> 8" in err and f"lr {lr!r} -> 0.01" in err
    assert (trained_run / "config.yaml").read_text() == saved
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert cli_main(["predict", str(tmp_path / "bad.pt"), str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(small)
    assert cli_main(["predict", str(trained_run / "model.pt"), str(small), "--out", str(tmp_path / "p"),
                     "--cropped"]) == 2
    assert "small.png" in capsys.readouterr().err


def test_train_help_states_the_trainconfig_defaults():
    """The help's defaults are written out (so `diffface --help` does not import the networks package): they must
    be TrainConfig's."""
    import argparse

    from diffface.cli.main import build_parser
    from diffface.networks.config import LOSSES, TrainConfig

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    helps = {a.dest: a.help for a in sub._actions}
    d = TrainConfig()
    for dest, value in (("steps", d.steps), ("batch_size", d.batch_size), ("loss", d.loss), ("width", d.width),
                        ("workers", d.num_workers)):
        assert f"(default: {value})" in helps[dest], dest
    assert f"(default: {d.lr:g}; {d.lr_final:g} after {d.lr_drop_at:.2g} of the steps)" in helps["lr"]
    assert tuple(next(a for a in sub._actions if a.dest == "loss").choices) == LOSSES
