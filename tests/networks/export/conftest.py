"""Fixtures of the export tests: a checkpoint of the method's network with trained-looking BatchNorm
statistics (so that its outputs depend on the input) and parameter normalisation (translation ~600 mm,
focal ~500 px), and the real face photo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffface.morphable_model import load_morphable_model
from diffface.networks import FaceRegressor, ModelIdentity, create_model, save_checkpoint
from diffface.networks.export.deploy import calibrate_batchnorm
from diffface.params import ParamNormalizer


@pytest.fixture(scope="session")
def builtin_model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="session")
def regressor(builtin_model) -> FaceRegressor:
    torch.manual_seed(0)
    network = calibrate_batchnorm(create_model("mobileface", width=10), torch.rand(16, 3, 96, 96))
    layout = builtin_model.layout
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(layout.network_size, generator=generator)
    mean[layout.slices["translation"]] = torch.tensor([0.0, 0.0, 600.0])
    mean[layout.slices["focal"]] = 500.0
    mean[layout.slices["principal_point"]] = 48.0
    std = torch.rand(layout.network_size, generator=generator) + 0.1
    identity = ModelIdentity(builtin_model.name, builtin_model.fingerprint, "builtin")
    return FaceRegressor(network.eval(), ParamNormalizer(mean, std), layout, identity, "mobileface", {"width": 10},
                         96).eval()


@pytest.fixture(scope="session")
def checkpoint(regressor, tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", regressor, step=7)


@pytest.fixture(scope="session")
def face_image(shared_data) -> Path:
    """The real photo with its 68 annotated landmarks beside it (image_0010.pts)."""
    path = shared_data / "faces" / "image_0010.png"
    assert path.with_suffix(".pts").is_file()
    return path
