"""Fixtures shared by the stage-2 tests: the built-in model, in float32 and float64."""

import copy

import pytest

from diffface.morphable_model import load_morphable_model


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="module")
def model64(model):
    return copy.deepcopy(model).double()
