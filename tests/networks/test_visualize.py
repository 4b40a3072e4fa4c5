"""networks.visualize: predictions rendered (mean albedo, default light) and blended over their crops."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffface.lighting import default_lighting
from diffface.morphable_model import MorphableModel
from diffface.networks.visualize import OVERLAY_OPACITY, prediction_overlays
from diffface.renderers import FaceRenderer

SIZE = 96


@pytest.fixture
def scene(tiny_model_data, make_parameters):
    model = MorphableModel(tiny_model_data)
    params = model.layout.unpack(make_parameters(model, 2, 5))  # beta and sh None, as a regressor predicts
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    return model, params, images


def _reference(model, params, size):
    """The face rendered directly: zero albedo coefficients (the mean albedo) under the default light."""
    batch = params.batch_size
    full = replace(params, beta=torch.zeros(batch, model.tex_dims), sh=default_lighting(batch))
    out = FaceRenderer(model, size, backend="builtin")(full)
    return out.images.permute(0, 3, 1, 2).clamp(0, 1), out.fragments.mask[:, None]


def test_overlay_blends_the_rendered_face_over_the_crop(scene):
    model, params, images = scene
    overlay = prediction_overlays(model, params, images)
    assert overlay.shape == images.shape and overlay.dtype == images.dtype
    assert torch.isfinite(overlay).all() and overlay.min() >= 0 and overlay.max() <= 1
    rendered, mask = _reference(model, params, (SIZE, SIZE))
    mask = mask.expand_as(images)
    covered = mask[:, 0].float().mean((1, 2))
    assert (covered > 0.02).all() and (covered < 0.98).all()  # the face covers part of each crop
    # outside the face the crop is untouched, inside it is the blend at the default opacity
    assert torch.equal(overlay[~mask], images[~mask])
    expected = images * (1 - OVERLAY_OPACITY) + rendered * OVERLAY_OPACITY
    torch.testing.assert_close(overlay[mask], expected[mask], atol=1e-5, rtol=0)
    assert (overlay[mask] - images[mask]).abs().max() > 0.05


def test_opacity_0_returns_the_input_and_1_the_rendered_face(scene):
    model, params, images = scene
    assert torch.equal(prediction_overlays(model, params, images, opacity=0.0), images)
    full = prediction_overlays(model, params, images, opacity=1.0)
    rendered, mask = _reference(model, params, (SIZE, SIZE))
    mask = mask.expand_as(images)
    torch.testing.assert_close(full[mask], rendered[mask], atol=1e-5, rtol=0)
    assert torch.equal(full[~mask], images[~mask])


def test_the_light_is_always_the_default_one(scene):
    """An ``sh`` in the parameters (here a black light) is replaced by the default light."""
    model, params, images = scene
    dark = replace(params, beta=torch.zeros(2, model.tex_dims), sh=torch.zeros(2, 27))
    torch.testing.assert_close(prediction_overlays(model, dark, images),
                               prediction_overlays(model, params, images), atol=1e-6, rtol=0)


def test_the_overlay_follows_the_image_size(scene):
    """A non-square image renders at its own height and width (the camera's pixels do not move)."""
    model, params, _ = scene
    images = torch.full((2, 3, 80, SIZE), 0.5)
    overlay = prediction_overlays(model, params, images, opacity=1.0)
    assert overlay.shape == (2, 3, 80, SIZE)
    rendered, mask = _reference(model, params, (80, SIZE))
    square, square_mask = _reference(model, params, (SIZE, SIZE))
    assert torch.equal(mask, square_mask[:, :, :80])  # the same face, cut at row 80
    mask = mask.expand_as(images)
    torch.testing.assert_close(overlay[mask], rendered[mask], atol=1e-5, rtol=0)
    assert (overlay[~mask] == 0.5).all()
