"""Fixtures for the network tests: a tiny morphable model saved to a file and a dataset of it written
directly through :mod:`diffface.data.format` (targets consistent with the model and the camera)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from diffface.camera import perspective_project
from diffface.data.format import DatasetInfo, ItemEntry, write_index, write_info, write_item
from diffface.model_format import save_model_npz
from diffface.morphable_model import MorphableModel

CROP = 96


@dataclass
class TinyDataset:
    root: Path
    model_path: Path
    model: MorphableModel


def tiny_parameters(model: MorphableModel, count: int, seed: int) -> torch.Tensor:
    """Random parameter vectors of ``model`` whose faces land inside a 96-px crop. Shape: -> (count, P)."""
    g = torch.Generator().manual_seed(seed)
    n = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    groups = replace(model.layout.zeros(count, include_fitting=False), alpha_id=n(count, model.id_dims) * 0.5,
                     alpha_exp=n(count, model.exp_dims) * 0.5,
                     translation=torch.stack([n(count) * 5, n(count) * 5, 600 + n(count) * 20], 1),
                     angles=n(count, 3) * 0.1, focal=500 + n(count, 1) * 20,
                     principal_point=CROP / 2 + n(count, 2) * 2)
    return model.layout.pack(groups)


def write_tiny_dataset(root: Path, model: MorphableModel, model_path: Path, num_train: int = 12, num_val: int = 4,
                       seed: int = 0) -> Path:
    count = num_train + num_val
    params = tiny_parameters(model, count, seed)
    groups = model.layout.unpack(params)
    vertices = model.shape(groups.alpha_id, groups.alpha_exp)
    projections, _ = perspective_project(vertices, groups.angles, groups.translation, groups.focal,
                                         groups.principal_point)
    write_info(root, DatasetInfo(crop_size=CROP, model_name=model.name, model_fingerprint=model.fingerprint,
                                 id_dims=model.id_dims, exp_dims=model.exp_dims, tex_dims=model.tex_dims,
                                 param_names=model.layout.names(), num_vertices=model.num_vertices,
                                 source=str(model_path)))
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(count):
        crop = rng.integers(0, 255, (CROP, CROP, 3), dtype=np.uint8)
        arrays = {"params": params[i].numpy(), "vertices": vertices[i].numpy(),
                  "projections": projections[i].numpy(), "landmarks": projections[i, model.landmark_indices].numpy()}
        write_item(root, f"face{i:03d}", crop, arrays)
        entries.append(ItemEntry(f"face{i:03d}", "train" if i < num_train else "val"))
    write_index(root, entries)
    return root


@pytest.fixture
def tiny_dataset(tmp_path, tiny_model_data) -> TinyDataset:
    model_path = save_model_npz(tiny_model_data, tmp_path / "tiny_model.npz")
    model = MorphableModel(tiny_model_data)
    root = write_tiny_dataset(tmp_path / "dataset", model, model_path)
    return TinyDataset(root, model_path, model)


@pytest.fixture
def make_parameters():
    """:func:`tiny_parameters` (test modules cannot import this conftest by name)."""
    return tiny_parameters
