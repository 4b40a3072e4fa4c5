"""Checkpoints: a file alone rebuilds the regressor; damaged or foreign files name themselves."""

import pytest
import torch

from diffface.networks import (CheckpointError, FaceRegressor, ModelIdentity, create_model, load_checkpoint,
                               read_checkpoint, save_checkpoint)
from diffface.params import ParamLayout, ParamNormalizer


def _regressor(seed=0):
    torch.manual_seed(seed)
    layout = ParamLayout(5, 3)
    network = create_model("mobileface", width=4, num_outputs=layout.network_size)
    network.train()
    network(torch.rand(4, 3, 96, 96))  # non-trivial BatchNorm running statistics
    normalizer = ParamNormalizer(torch.randn(17), torch.rand(17) + 0.5)
    return FaceRegressor(network, normalizer, layout, ModelIdentity("tiny", "abc123", "tiny.npz"), "mobileface",
                         {"width": 4, "num_outputs": 17, "input_size": 96}, 96).eval()


def test_round_trip_predicts_like_the_eager_regressor(tmp_path):
    regressor = _regressor()
    path = save_checkpoint(tmp_path / "model.pt", regressor, step=12, train_config={"steps": 12})
    loaded = load_checkpoint(path)
    x = torch.rand(3, 3, 96, 96)
    torch.testing.assert_close(loaded(x), regressor(x), rtol=0, atol=0)
    assert not loaded.training and loaded.step == 12 and loaded.train_config == {"steps": 12}
    assert loaded.model_identity == ModelIdentity("tiny", "abc123", "tiny.npz")
    assert loaded.layout == ParamLayout(5, 3)
    data = read_checkpoint(path)
    assert data["param_names"] == ParamLayout(5, 3).names() and data["input"]["size"] == 96


def test_regressor_denormalises_the_network_output():
    regressor = _regressor()
    x = torch.rand(2, 3, 96, 96)
    raw = regressor.network(x)
    torch.testing.assert_close(regressor(x), raw * regressor.normalizer.std + regressor.normalizer.mean)
    params = regressor.predict(x, batch_size=1)
    torch.testing.assert_close(regressor.layout.pack(params), regressor(x))
    assert params.translation.shape == (2, 3)


def test_damaged_and_foreign_files_raise_naming_the_file(tmp_path):
    regressor = _regressor()
    good = save_checkpoint(tmp_path / "good.pt", regressor, step=1).read_bytes()
    (tmp_path / "torn.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="torn.pt"):
        load_checkpoint(tmp_path / "torn.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt.*not a diffface network checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    data = read_checkpoint(tmp_path / "good.pt")
    data["state_dict"].pop("fc.weight")
    torch.save(data, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="partial.pt.*inconsistent"):
        load_checkpoint(tmp_path / "partial.pt")


def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path):
    data = read_checkpoint(save_checkpoint(tmp_path / "good.pt", _regressor(), step=1))
    data["state_dict"]["fc.weight"][0, 0] = float("nan")
    torch.save(data, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan.pt: tensor state_dict.fc.weight has 1 non-finite value"):
        load_checkpoint(tmp_path / "nan.pt")
    data = read_checkpoint(tmp_path / "good.pt")
    data["normalizer"]["std"][2] = float("inf")
    torch.save(data, tmp_path / "inf.pt")
    with pytest.raises(CheckpointError, match=r"inf.pt: tensor normalizer.std"):
        read_checkpoint(tmp_path / "inf.pt")


def test_weights_of_another_width_give_one_line(tmp_path):
    data = read_checkpoint(save_checkpoint(tmp_path / "good.pt", _regressor(), step=1))
    data["network"]["config"]["width"] = 8
    torch.save(data, tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="wide.pt: inconsistent checkpoint") as error:
        load_checkpoint(tmp_path / "wide.pt")
    assert "\n" not in str(error.value)
