"""The training loop: it learns, resumes exactly after a kill, saves its config, and 2 ranks equal 1."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from diffface.networks import TrainConfig, load_checkpoint, read_checkpoint, train
from diffface.networks.mobileface import mobileface
from diffface.networks.train import lr_factor, memory_format


def _config(tiny_dataset, **changes):
    base = TrainConfig(model=str(tiny_dataset.model_path), width=4, steps=6, batch_size=8, lr=1e-3,
                       val_every=3, checkpoint_every=2, log_every=1, num_workers=0, overlay_samples=0)
    return base.updated(changes)


def test_training_lowers_the_loss_and_writes_the_run(tiny_dataset, tmp_path):
    config = _config(tiny_dataset, steps=12, lr=3e-3, augment=False, val_every=12, checkpoint_every=1,
                     overlay_samples=2)
    run = tmp_path / "run"
    first = train(tiny_dataset.root, run, config, stop_at_step=1)  # the loss of the initial weights
    last = train(tiny_dataset.root, run, config)
    assert last["loss/total"] < 0.8 * first["loss/total"]
    for name in ("config.yaml", "model.pt", "checkpoints/last.pt", "metrics.jsonl"):
        assert (run / name).is_file()
    assert any((run / "tensorboard").iterdir())
    assert TrainConfig.from_yaml(run / "config.yaml") == config
    regressor = load_checkpoint(run / "model.pt")
    assert regressor.step == 12 and regressor.model_identity.fingerprint == tiny_dataset.model.fingerprint
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"d_mean", "auc", "error_mm_mean", "mean_shape_d_mean"} <= set(metrics) and metrics["step"] == 12


def test_mse_loss_trains_too(tiny_dataset, tmp_path):
    figures = train(tiny_dataset.root, tmp_path / "run", _config(tiny_dataset, loss="mse", steps=2, augment=False))
    assert set(k for k in figures if k.startswith("loss/")) == {"loss/mse", "loss/total"}


def test_photometric_term_joins_the_loss(tiny_dataset, tmp_path):
    figures = train(tiny_dataset.root, tmp_path / "run",
                    _config(tiny_dataset, steps=1, photometric_weight=0.5, augment=False))
    assert figures["loss/photometric"] > 0
    assert figures["loss/total"] == pytest.approx(figures["loss/loss_3d"] + figures["loss/loss_2d"]
                                                  + 0.5 * figures["loss/photometric"], rel=1e-5)


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tiny_dataset, tmp_path):
    config = _config(tiny_dataset)  # with augmentation: its draws must resume too
    train(tiny_dataset.root, tmp_path / "straight", config)
    killed = train(tiny_dataset.root, tmp_path / "killed", config, stop_at_step=5)  # step 5 is lost: last.pt is at 4
    assert killed["step"] == 5 and read_checkpoint(tmp_path / "killed/checkpoints/last.pt")["step"] == 4
    resumed = train(tiny_dataset.root, tmp_path / "killed", config)
    assert resumed["steps_run"] == 2
    a, b = read_checkpoint(tmp_path / "straight/model.pt"), read_checkpoint(tmp_path / "killed/model.pt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    sa = read_checkpoint(tmp_path / "straight/checkpoints/last.pt")["training_state"]
    sb = read_checkpoint(tmp_path / "killed/checkpoints/last.pt")["training_state"]
    for index, state in sa["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], sb["optimizer"]["state"][index]["exp_avg_sq"])
    assert sa["scheduler"] == sb["scheduler"]


def test_resume_refuses_another_dataset_or_training_settings(tiny_dataset, tmp_path):
    """Settings that shaped the checkpoint's weights (and the dataset) must match; config.yaml stays untouched."""
    from diffface.data.format import read_index, write_index

    config, run = _config(tiny_dataset, steps=4, augment=False, val_every=100), tmp_path / "run"
    train(tiny_dataset.root, run, config, stop_at_step=2)  # last.pt at step 2
    saved = (run / "config.yaml").read_text()
    for changes, said in (({"lr": 1e-4}, "lr 0.001 -> 0.0001"), ({"batch_size": 4}, "batch_size 8 -> 4"),
                          ({"loss": "mse", "width": 8}, "width 4 -> 8, loss '2d3d' -> 'mse'"),
                          ({"seed": 1}, "seed 0 -> 1")):
        with pytest.raises(ValueError, match="other settings") as error:
            train(tiny_dataset.root, run, config.updated(changes))
        assert said in str(error.value) and "\n" not in str(error.value) and "a new --out" in str(error.value)
    other = shutil.copytree(tiny_dataset.root, tmp_path / "other")  # a copy is the same dataset; one item less is not
    write_index(other, read_index(other)[1:])
    with pytest.raises(ValueError, match=f"dataset {tiny_dataset.root.resolve()} -> {other.resolve()}"):
        train(other, run, config)
    assert (run / "config.yaml").read_text() == saved
    assert read_checkpoint(run / "checkpoints/last.pt")["step"] == 2
    # a longer run and other intervals resume (the run is extended)
    figures = train(tiny_dataset.root, run, config.updated({"steps": 5, "log_every": 2, "checkpoint_every": 3}))
    assert figures["step"] == 5 and figures["steps_run"] == 3
    assert TrainConfig.from_yaml(run / "config.yaml").steps == 5
    assert read_checkpoint(run / "model.pt")["dataset"]["path"] == str(tiny_dataset.root.resolve())


def test_empty_split_after_curation_says_so(tiny_dataset, tmp_path):
    from diffface.data.format import append_decision, read_index

    for entry in read_index(tiny_dataset.root):
        if entry.split == "train":
            append_decision(tiny_dataset.root, entry.name, "reject")
    with pytest.raises(ValueError, match=r"curation rejected 12 of the 12 items of the 'train' split.*diffface curate"):
        train(tiny_dataset.root, tmp_path / "run", _config(tiny_dataset))


def test_learning_rate_drops_after_two_thirds():
    config = TrainConfig(steps=30)
    assert [lr_factor(s, config) for s in (0, 19, 20, 29)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]


def test_config_yaml_overrides_and_errors(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("loss: mse\nsteps: 10\naugment_options: {blur_probability: 0.5}\n")
    config = TrainConfig.from_yaml(path).with_overrides(["norm=l1", "lr=0.001"])
    assert (config.loss, config.steps, config.norm, config.lr) == ("mse", 10, "l1", 1e-3)
    assert TrainConfig().with_overrides(["lr=3e-3", "lr_final=3e-4"]).lr_final == 3e-4  # YAML 1.2 numbers
    assert config.augment_options == {"blur_probability": 0.5} and config.batch_size == TrainConfig().batch_size
    assert TrainConfig.from_yaml(_saved(config, tmp_path)) == config
    path.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="cfg.yaml.*stepz"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ValueError, match="steps: expected an integer"):
        TrainConfig().with_overrides(["steps=many"])
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="l2")


def _saved(config, tmp_path):
    config.to_yaml(tmp_path / "saved.yaml")
    assert yaml.safe_load((tmp_path / "saved.yaml").read_text())["loss"] == config.loss
    return tmp_path / "saved.yaml"


def test_dataset_of_another_model_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="not the one"):
        train(tiny_dataset.root, tmp_path / "run", _config(tiny_dataset, model="builtin"))
    with pytest.raises(ValueError, match="tiny.*--model"):
        train(tiny_dataset.root, tmp_path / "run", _config(tiny_dataset, model="auto"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_torchrun_matches_one_process(tiny_dataset, tmp_path):
    """2 ranks with 4 samples each train the network 1 process trains with the global batch of 8."""
    cfg = tmp_path / "cfg.yaml"
    # augmentation off: its black rectangles put many activations at exactly the same value near a ReLU kink,
    # where the thread count's rounding flips whole gradient regions; that augmented samples do not depend
    # on the sharding is tested in test_data.py. The head starts random and the rate drops to 1e-5: Adam divides
    # each gradient by its own magnitude, so where gradients are near zero (the backbone's behind a head started
    # at zero) it turns rounding into steps of about the learning rate on some weights
    config = _config(tiny_dataset, steps=4, augment=False, val_every=4, checkpoint_every=4, tensorboard=False,
                     zero_init_head=False, lr_final=1e-5)
    config.to_yaml(cfg)
    one = train(tiny_dataset.root, tmp_path / "one", config)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "diffface.cli.main", "train", str(tiny_dataset.root),
               "--out", str(tmp_path / "two"), "--config", str(cfg), "--json"]
    double = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert double.returncode == 0, double.stderr[-3000:]
    two = json.loads(double.stdout)
    assert two["world_size"] == 2 and one["world_size"] == 1
    # the same samples, BatchNorm statistics and mean gradients: only summation order differs
    assert two["loss/total"] == pytest.approx(one["loss/total"], rel=1e-4)
    assert two["val/d_mean"] == pytest.approx(one["val/d_mean"], rel=1e-3)
    a, b = read_checkpoint(tmp_path / "one/model.pt"), read_checkpoint(tmp_path / "two/model.pt")
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_default_layout_gradients_match_float64():
    """The default training layout's float32 gradients are within 2% of float64's on every tensor (PyTorch
    2.13's channels-last CPU kernels were 12% off on a depthwise convolution, so it is not the default)."""
    torch.manual_seed(0)
    network, images = mobileface(width=4, num_outputs=118, input_size=96), torch.randn(8, 3, 96, 96)
    layout = memory_format(TrainConfig())

    def gradients(dtype):
        net = network.to(dtype).to(memory_format=layout)
        net.zero_grad()
        net(images.to(dtype).contiguous(memory_format=layout)).square().sum().backward()
        return {name: p.grad.double().clone() for name, p in net.named_parameters()}

    reference, single = gradients(torch.float64), gradients(torch.float32)
    for name, value in reference.items():
        assert (single[name] - value).abs().max() <= 0.02 * value.abs().max(), name


def test_init_starts_from_a_checkpoint_and_refuses_another_network(tiny_dataset, tmp_path):
    """Fine-tuning: a run started from a checkpoint holds its weights (at learning rate 0 they stay them) and
    its parameter statistics, not this dataset's; another width is refused naming the file."""
    trained = tmp_path / "trained"
    train(tiny_dataset.root, trained, _config(tiny_dataset, steps=4, lr=3e-3, augment=False))
    source = load_checkpoint(trained / "model.pt")
    config = _config(tiny_dataset, steps=1, lr=0.0, lr_final=0.0, weight_decay=0.0, augment=False,
                     init=str(trained / "model.pt"))
    train(tiny_dataset.root, tmp_path / "tuned", config)
    tuned = load_checkpoint(tmp_path / "tuned/model.pt")
    for (name, weight), (_, start) in zip(tuned.network.named_parameters(), source.network.named_parameters()):
        torch.testing.assert_close(weight, start, rtol=0, atol=0, msg=name)
    assert bool(source.network.fc.weight.abs().sum() > 0)  # trained: not the zero-initialised head
    torch.testing.assert_close(tuned.normalizer.mean, source.normalizer.mean, rtol=0, atol=0)
    torch.testing.assert_close(tuned.normalizer.std, source.normalizer.std, rtol=0, atol=0)
    with pytest.raises(ValueError, match="init checkpoint .*model.pt.*width"):
        train(tiny_dataset.root, tmp_path / "wider", _config(tiny_dataset, width=6, init=str(trained / "model.pt")))
