"""Shared pytest fixtures.

``shared_data`` is the one way tests reach ``../shared/data`` beside the checkout: it skips with a
clear reason when that folder is absent, and fails when ``DIFFFACE_REQUIRE_SHARED=1`` (CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from diffface.threads import torch_threads

SHARED_ENV = "DIFFFACE_SHARED"
REQUIRE_ENV = "DIFFFACE_REQUIRE_SHARED"


def _shared_root() -> Path:
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV])
    return Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``shared/data`` (the Surrey model, a real photo); skip or fail when absent."""
    data = _shared_root() / "data"
    if not (data / "sfm" / "sfm_3448.npz").is_file():
        reason = (f"shared data not found at {data} (set {SHARED_ENV} to the shared/ folder); "
                  "tests on the real Surrey model and photo are skipped")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
        pytest.skip(reason)
    return data


OPTIONAL_ENV = "DIFFFACE_REQUIRE_OPTIONAL"


@pytest.fixture(scope="session")
def optional_import():
    """``optional_import(module, install)``: import an optional backend, or skip saying how to install it.

    With ``DIFFFACE_REQUIRE_OPTIONAL=1`` (CI, which installs the dev extras) a missing backend fails
    instead, so a broken install cannot pass as a skip.
    """
    import importlib

    def load(module: str, install: str):
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            reason = f"{module} is not installed ({install}): {exc}"
            if os.environ.get(OPTIONAL_ENV) == "1":
                pytest.fail(f"{OPTIONAL_ENV}=1 but {reason}")
            pytest.skip(reason)

    return load


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium_path(optional_import) -> Path:
    """The system's Chromium for Playwright (never a downloaded browser); skip (fail under
    ``DIFFFACE_REQUIRE_OPTIONAL=1``) when Playwright or the browser is missing."""
    optional_import("playwright.sync_api", "pip install playwright; the browser comes from apt: chromium")
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} not found (apt-get install chromium); the browser test is skipped"
        if os.environ.get(OPTIONAL_ENV) == "1":
            pytest.fail(f"{OPTIONAL_ENV}=1 but {reason}")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one CPU thread through a test module (its module fixtures too, when it is listed first: e.g.
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): tiny tensors gain nothing from more threads, and
    two OpenMP threads on loaded cores run many times slower (measured 20x on stage 2 at 64 px; see
    ``LandmarkFitConfig.cpu_threads``)."""
    with torch_threads(1):
        yield


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on a CUDA GPU (the cuda case of the device fixture, and tests that "
                                       "need one); `pytest -m cuda` runs them alone (tools/gpu_check.sh)")


def _devices() -> list:
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=_devices())
def device(request) -> torch.device:
    return torch.device(request.param)


def make_tiny_model_data(num_vertices: int = 40, id_dims: int = 5, exp_dims: int = 3, tex_dims: int = 4,
                         seed: int = 0):
    """A small random but valid :class:`MorphableModelData` (a bumpy grid) for unit tests."""
    import numpy as np

    from diffface.model_format import MorphableModelData

    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(num_vertices)))
    xs, ys = np.meshgrid(np.linspace(-50, 50, side), np.linspace(-60, 60, side))
    mean = np.stack([xs.ravel(), ys.ravel(), 20 * np.exp(-(xs.ravel() ** 2 + ys.ravel() ** 2) / 2000)], 1)
    V = mean.shape[0]
    tris = []
    for i in range(side - 1):
        for j in range(side - 1):
            a, b, c, d = i * side + j, i * side + j + 1, (i + 1) * side + j, (i + 1) * side + j + 1
            tris += [[a, b, d], [a, d, c]]
    landmarks = rng.choice(V, 68, replace=True)
    return MorphableModelData(
        mean_shape=mean, id_basis=rng.normal(size=(V, 3, id_dims)) / np.sqrt(3 * V),
        id_std=np.sort(rng.uniform(1, 10, id_dims))[::-1].copy(),
        exp_basis=rng.normal(size=(V, 3, exp_dims)) / np.sqrt(3 * V), exp_std=np.ones(exp_dims),
        albedo_mean=rng.uniform(0.3, 0.7, (V, 3)), albedo_basis=rng.normal(size=(V, 3, tex_dims)) * 0.01,
        albedo_std=np.ones(tex_dims), triangles=np.array(tris), uv=(mean[:, :2] - mean[:, :2].min(0)) / 120,
        landmark_indices=landmarks, contour_landmarks=np.array([0, 16]),
        contour_lines=np.array([[0, 1, 2, -1], [side - 1, side - 2, -1, -1]]), name="tiny", source="tests",
    )


@pytest.fixture
def tiny_model_data():
    return make_tiny_model_data()
