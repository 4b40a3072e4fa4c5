"""Shared fixtures of the dataset tests: the built-in model, a tiny synthetic benchmark and a dataset built from it."""

from __future__ import annotations

import shutil

import pytest

from diffface.app.dataset.build import BuildConfig, build_dataset
from diffface.morphable_model import load_morphable_model
from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark

SYNTH_FACES, SYNTH_SIZE = 8, 96
CROP_SIZE = 64


@pytest.fixture(scope="session")
def builtin_model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="session")
def synth_source(builtin_model, tmp_path_factory):
    """A ``diffface synth`` folder of 8 faces at 96 px (true parameters, noisy .pts landmarks)."""
    out = tmp_path_factory.mktemp("synth") / "S"
    generate_benchmark(out, SynthBenchmarkConfig(num_faces=SYNTH_FACES, scene=benchmark_scene(SYNTH_SIZE, 5),
                                                 occluder_probability=0.5), model=builtin_model)
    return out


@pytest.fixture(scope="session")
def built(builtin_model, synth_source, tmp_path_factory):
    """``(dataset folder, summary)`` built from :func:`synth_source` (read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("dataset") / "D"
    config = BuildConfig(crop_size=CROP_SIZE, val_fraction=0.25, preview_size=96, batch_size=4)
    return out, build_dataset(synth_source, out, config, model=builtin_model)


@pytest.fixture
def dataset_copy(built, tmp_path):
    """A private copy of the built dataset, for tests that curate it."""
    target = tmp_path / "D"
    shutil.copytree(built[0], target)
    return target
