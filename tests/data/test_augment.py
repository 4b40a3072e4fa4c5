"""Photometric augmentation: noise levels, occluded fraction, blur strength, probabilities, determinism."""

import math

import pytest
import torch

from diffface.data.augment import AugmentConfig, Augmenter, augment_images, rectangle_masks

NONE = dict(blur_probability=0.0, hsv_noise_probability=0.0, rgb_noise_probability=0.0, occlusion_probability=0.0)


def only(**settings) -> AugmentConfig:
    return AugmentConfig(**{**NONE, **settings})


def grey(batch=64, size=32, device="cpu", dtype=torch.float32):
    return torch.full((batch, 3, size, size), 0.5, device=device, dtype=dtype)


def test_rgb_noise_has_the_configured_standard_deviation(device):
    images = grey(device=device)
    out = augment_images(images, only(rgb_noise_probability=1.0, rgb_noise_std=(0.05, 0.05)),
                         torch.Generator(device=device).manual_seed(0))
    assert out.device == images.device
    difference = (out - images).cpu()
    assert float(difference.std()) == pytest.approx(0.05, rel=0.02)
    assert abs(float(difference.mean())) < 1e-3
    # per-image σ drawn uniformly in [0, 0.08]: the mean variance is 0.08² / 3
    out = augment_images(grey(2000, 8), only(rgb_noise_probability=1.0, rgb_noise_std=(0.0, 0.08)),
                         torch.Generator().manual_seed(1))
    assert float((out - 0.5).pow(2).mean()) == pytest.approx(0.08 ** 2 / 3, rel=0.05)


def test_hsv_noise_levels():
    generator = torch.Generator().manual_seed(0)
    # value noise on grey (saturation 0): every channel moves by the value noise
    out = augment_images(grey(), only(hsv_noise_probability=1.0, hsv_noise_std=(0.0, 0.0, 0.05)), generator)
    assert float((out - 0.5).std()) == pytest.approx(0.05, rel=0.02)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    # hue noise on a saturated colour: the hue turns by σ = 0.02 turn, saturation and value stay
    from kornia.color import rgb_to_hsv

    red = torch.zeros(64, 3, 32, 32)
    red[:, 0], red[:, 1], red[:, 2] = 0.8, 0.4, 0.4  # hue 0, saturation 0.5, value 0.8
    out = augment_images(red, only(hsv_noise_probability=1.0, hsv_noise_std=(0.02, 0.0, 0.0)), generator)
    hsv = rgb_to_hsv(out)
    turned = torch.remainder(hsv[:, 0] + math.pi, 2 * math.pi) - math.pi
    assert float(turned.std()) == pytest.approx(2 * math.pi * 0.02, rel=0.03)
    assert float((hsv[:, 1] - 0.5).abs().max()) < 1e-4 and float((hsv[:, 2] - 0.8).abs().max()) < 1e-4


def test_blur_reduces_white_noise_variance_as_a_gaussian_does():
    sigma = 2.0
    noise = torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = augment_images(noise, only(blur_probability=1.0, blur_sigma_px=(sigma, sigma)),
                         torch.Generator().manual_seed(0))
    # reference: the sampled, normalised Gaussian (radius 3σ) applied along x then y
    taps = torch.exp(-0.5 * (torch.arange(-6, 7, dtype=torch.float64) / sigma) ** 2)
    expected_ratio = float(((taps / taps.sum()) ** 2).sum()) ** 2
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    assert float(out[inner].var() / noise[inner].var()) == pytest.approx(expected_ratio, rel=0.05)
    flat = augment_images(grey(4), only(blur_probability=1.0), torch.Generator().manual_seed(0))
    assert float((flat - 0.5).abs().max()) < 1e-6


def test_occluded_fraction_matches_the_configured_expectation():
    size = 32
    out = augment_images(grey(1500, size), only(occlusion_probability=1.0, occlusion_max_count=1,
                                                occlusion_size=(0.2, 0.4)), torch.Generator().manual_seed(0))
    black = (out == 0).all(1)
    assert torch.equal((out == 0).any(1), black)  # rectangles are black in every channel, the rest untouched
    assert torch.equal(out[~black[:, None].expand_as(out)], torch.full_like(out[~black[:, None].expand_as(out)], 0.5))
    # width and height fractions uniform in [0.2, 0.4], independent: E[area] = 0.3²
    assert float(black.float().mean()) == pytest.approx(0.3 ** 2, rel=0.03)
    # every rectangle is one axis-aligned box: rows and columns it covers are contiguous and fully black
    rows, cols = black.any(2), black.any(1)
    assert torch.equal(black.sum((1, 2)), rows.sum(1) * cols.sum(1))


def test_probabilities_pick_the_configured_share_of_images():
    config = only(occlusion_probability=0.3, rgb_noise_probability=0.0)
    out = augment_images(grey(4000, 8), config, torch.Generator().manual_seed(0))
    share = float((out == 0).flatten(1).any(1).float().mean())
    assert share == pytest.approx(0.3, abs=0.025)
    out = augment_images(grey(4000, 8), only(rgb_noise_probability=0.6), torch.Generator().manual_seed(0))
    assert float((out != 0.5).flatten(1).any(1).float().mean()) == pytest.approx(0.6, abs=0.025)
    assert torch.equal(augment_images(grey(8), only(), torch.Generator()), grey(8))


def test_deterministic_under_a_seed(device):
    images = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(0)).to(device)
    config = AugmentConfig(blur_probability=0.5, hsv_noise_probability=0.5, rgb_noise_probability=0.5,
                           occlusion_probability=0.5, seed=7)
    first = Augmenter(config)(images)
    assert torch.equal(first, Augmenter(config)(images))
    assert not torch.equal(first, Augmenter(AugmentConfig(**{**config.to_dict(), "seed": 8}))(images))
    again = augment_images(images, config, torch.Generator(device=device).manual_seed(3))
    assert torch.equal(again, augment_images(images, config, torch.Generator(device=device).manual_seed(3)))
    module = Augmenter(config)
    assert not torch.equal(module(images), module(images))  # the module's generator moves on between batches
    assert float(first.min()) >= 0 and float(first.max()) <= 1


def test_rectangle_masks_against_a_loop_reference():
    x0, y0 = torch.tensor([[1.2, 5.0]]), torch.tensor([[0.0, 3.4]])
    w, h = torch.tensor([[2.5, 1.0]]), torch.tensor([[3.0, 2.2]])
    got = rectangle_masks(8, 9, x0, y0, w, h, torch.tensor([[True, False]]))[0]
    reference = torch.zeros(8, 9, dtype=torch.bool)
    for i in range(8):
        for j in range(9):
            reference[i, j] = 1.2 <= j + 0.5 < 3.7 and 0 <= i + 0.5 < 3.0
    assert torch.equal(got, reference)


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="blur_probability"):
        AugmentConfig(blur_probability=1.5)
    with pytest.raises(ValueError, match="occlusion_size"):
        AugmentConfig(occlusion_size=(0.5, 0.2))
    with pytest.raises(ValueError, match="colour"):
        AugmentConfig.from_dict({"colour": 1})
    assert AugmentConfig.from_dict({"rgb_noise_std": [0.01, 0.02]}).rgb_noise_std == (0.01, 0.02)
    assert Augmenter({"seed": 3}).config.seed == 3
    with pytest.raises(ValueError, match="images"):
        augment_images(torch.zeros(2, 1, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        augment_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
