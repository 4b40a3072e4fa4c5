"""Fixtures shared by the stage-2 tests: the built-in model, in float32 and float64."""

import copy
from dataclasses import replace

import pytest
import torch

from diffface.app.synth import random_backgrounds
from diffface.fitting.texture_fitting import TextureFitConfig, fit_texture
from diffface.landmark_marching import project_landmarks
from diffface.morphable_model import load_morphable_model
from diffface.renderers import FaceRenderer


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


@pytest.fixture(scope="module")
def model64(model):
    return copy.deepcopy(model).double()


def photographed(model64, truth, size: int):
    """Photos of ``truth`` (float64 parameters) by the per-pixel renderer over random backgrounds, their landmarks,
    and a start for stage 2: the mean identity, the pose 0.03 rad off, albedo and lighting solved.

    Shape:
        -> images (B, 3, size, size), landmarks (B, 68, 2), start (B, ...).
    """
    backgrounds = random_backgrounds(truth.batch_size, size, seed=3).double()
    with torch.no_grad():
        images = FaceRenderer(model64, size, per_pixel=True)(truth, backgrounds).images.permute(0, 3, 1, 2)
    images = images.clamp(0, 1).contiguous()
    landmarks, _ = project_landmarks(model64, truth)
    start = replace(truth, alpha_id=torch.zeros_like(truth.alpha_id), angles=truth.angles + 0.03, beta=None, sh=None)
    start = fit_texture(model64, images, landmarks, start,
                        TextureFitConfig(term="image", groups=("lighting", "albedo"), rounds=2)).params
    return images, landmarks, start
