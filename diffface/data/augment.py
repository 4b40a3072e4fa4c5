"""Photometric augmentation of training crops, batched on the crops' device (kornia).

Four degradations, each applied to an image with its own probability: Gaussian blur, per-pixel
noise in HSV, per-pixel Gaussian noise in RGB, and random black rectangles (occlusion), in that
order (the rectangles last, so they stay black). All are **photometric**: no pixel moves, so the
targets of a crop (parameters, vertices, projections, landmarks) stay valid unchanged.

Every random number is drawn from one ``torch.Generator`` in a fixed order (the per-image choices
and strengths for the whole batch, the per-pixel noise only for the images that get it), so a batch's
result depends only on the generator's state and the device it lives on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from kornia.color import hsv_to_rgb, rgb_to_hsv
from kornia.filters import gaussian_blur2d
from torch import nn

from diffface.checks import check_shape


@dataclass
class AugmentConfig:
    """Probabilities and strengths of the augmentations (a mapping of these keys works too).

    Attributes:
        blur_probability: chance an image is blurred.
        blur_sigma_px: the blur's σ is drawn uniformly in this range (pixels).
        hsv_noise_probability: chance an image gets HSV noise.
        hsv_noise_std: per-pixel Gaussian σ of hue (in turns, 1 = 360°), saturation and value.
        rgb_noise_probability: chance an image gets RGB noise.
        rgb_noise_std: the per-image σ of per-pixel RGB noise is drawn uniformly in this range
            (intensities in [0, 1]).
        occlusion_probability: chance an image gets black rectangles.
        occlusion_max_count: an occluded image gets 1 to this many rectangles (uniformly).
        occlusion_size: each rectangle's width and height, as fractions of the image's, are drawn
            uniformly in this range (independently); its position uniformly inside the image.
        seed: seed of :class:`Augmenter`'s own generator.
    """

    blur_probability: float = 0.2
    blur_sigma_px: tuple[float, float] = (0.5, 1.5)
    hsv_noise_probability: float = 0.3
    hsv_noise_std: tuple[float, float, float] = (0.01, 0.04, 0.04)
    rgb_noise_probability: float = 0.3
    rgb_noise_std: tuple[float, float] = (0.0, 0.04)
    occlusion_probability: float = 0.3
    occlusion_max_count: int = 3
    occlusion_size: tuple[float, float] = (0.1, 0.4)
    seed: int = 0

    def __post_init__(self):
        for f in fields(self):  # YAML gives lists
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        for name in ("blur_probability", "hsv_noise_probability", "rgb_noise_probability", "occlusion_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"augmentation setting {name} must be in [0, 1], got {getattr(self, name)}")
        ranges = {"blur_sigma_px": (0, math.inf), "rgb_noise_std": (0, math.inf), "occlusion_size": (0, 1)}
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if len(value) != 2 or not low <= value[0] <= value[1] <= high:
                raise ValueError(f"augmentation setting {name} must be a range (low, high) within "
                                 f"[{low}, {high}], got {value}")
        if len(self.hsv_noise_std) != 3 or min(self.hsv_noise_std) < 0:
            raise ValueError(f"augmentation setting hsv_noise_std must be three non-negative σ, got "
                             f"{self.hsv_noise_std}")
        if self.occlusion_max_count < 1:
            raise ValueError(f"augmentation setting occlusion_max_count must be at least 1, got "
                             f"{self.occlusion_max_count}")

    @classmethod
    def from_dict(cls, mapping: dict) -> "AugmentConfig":
        """From a mapping (e.g. YAML); an unknown key raises ``ValueError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown augmentation setting(s) {unknown}; AugmentConfig has {sorted(known)}")
        return cls(**mapping)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _draw(generator: torch.Generator | None, device: torch.device, normal: bool, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) or standard normal numbers from ``generator`` (on its device), moved to ``device``."""
    where = generator.device if generator is not None else device
    draw = torch.randn if normal else torch.rand
    return draw(*shape, generator=generator, device=where).to(device)


def gaussian_blur_images(images: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own isotropic Gaussian of σ ``sigma_px`` (reflected borders).

    Shape:
        images: (B, C, H, W); sigma_px: (B,) positive -> (B, C, H, W).
    """
    radius = max(1, math.ceil(3 * float(sigma_px.max()))) if sigma_px.numel() else 1
    size = 2 * radius + 1
    return gaussian_blur2d(images, (size, size), sigma_px.to(images)[:, None].expand(-1, 2).contiguous())


def hsv_noise(images: torch.Tensor, noise: torch.Tensor, std: tuple[float, float, float]) -> torch.Tensor:
    """Add per-pixel noise in HSV: hue turns around the circle, saturation and value are clipped to [0, 1].

    Args:
        noise: standard normal numbers, scaled by ``std`` (hue σ in turns).

    Shape:
        images: (B, 3, H, W) RGB in [0, 1]; noise: (B, 3, H, W) -> (B, 3, H, W).
    """
    hsv = rgb_to_hsv(images)
    scale = torch.tensor([2 * math.pi * std[0], std[1], std[2]], dtype=images.dtype, device=images.device)
    hsv = hsv + noise * scale[:, None, None]
    hue = torch.remainder(hsv[:, :1], 2 * math.pi)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:].clamp(0, 1)], 1))


def rectangle_masks(height: int, width: int, x0: torch.Tensor, y0: torch.Tensor, w: torch.Tensor,
                    h: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Union of axis-aligned rectangles: pixel ``(i, j)`` is inside when its centre ``(j + ½, i + ½)`` is
    in ``[x0, x0 + w) × [y0, y0 + h)`` (pixels) of an active rectangle.

    Shape:
        x0, y0, w, h, active: (B, K) -> (B, H, W) bool.
    """
    cols = torch.arange(width, device=x0.device, dtype=x0.dtype) + 0.5
    rows = torch.arange(height, device=x0.device, dtype=x0.dtype) + 0.5
    in_x = (cols >= x0[..., None]) & (cols < (x0 + w)[..., None])  # (B, K, W)
    in_y = (rows >= y0[..., None]) & (rows < (y0 + h)[..., None])  # (B, K, H)
    inside = in_y[..., :, None] & in_x[..., None, :] & active[..., None, None]
    return inside.any(1)


def augment_images(images: torch.Tensor, config: AugmentConfig = AugmentConfig(),
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur, HSV noise, RGB noise and black rectangles, each with its probability (see the module docstring).

    Photometric only: targets of the images need no change.

    Args:
        images: RGB in [0, 1], on any device.
        config: probabilities and strengths.
        generator: the source of randomness (on ``images``' device or the CPU); None: torch's default.

    Returns:
        The augmented images in [0, 1] (a new tensor).

    Shape:
        images: (B, 3, H, W) -> (B, 3, H, W).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = augment_images(torch.rand(8, 3, 96, 96), AugmentConfig(rgb_noise_probability=1.0), g)
        >>> out.shape
        torch.Size([8, 3, 96, 96])
    """
    check_shape(images, ["B", 3, "H", "W"], "images")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}")
    B, _, H, W = images.shape
    device = images.device

    def draw(*shape: int, normal: bool = False) -> torch.Tensor:
        return _draw(generator, device, normal, *shape).to(images.dtype)

    def between(low: float, high: float, u: torch.Tensor) -> torch.Tensor:
        return low + (high - low) * u

    out = images.clone()
    # blur
    chosen = draw(B) < config.blur_probability
    sigma = between(*config.blur_sigma_px, draw(B)).clamp_min(1e-3)
    if chosen.any():
        out[chosen] = gaussian_blur_images(out[chosen], sigma[chosen])
    # noise in HSV, then in RGB (per-pixel noise drawn for the chosen images only)
    chosen = draw(B) < config.hsv_noise_probability
    if chosen.any():
        out[chosen] = hsv_noise(out[chosen], draw(int(chosen.sum()), 3, H, W, normal=True), config.hsv_noise_std)
    chosen = draw(B) < config.rgb_noise_probability
    std = between(*config.rgb_noise_std, draw(B))
    if chosen.any():
        noise = draw(int(chosen.sum()), 3, H, W, normal=True)
        out[chosen] = out[chosen] + noise * std[chosen][:, None, None, None]
    # black rectangles
    K = config.occlusion_max_count
    chosen = draw(B) < config.occlusion_probability
    count = 1 + (draw(B) * K).floor().clamp_max(K - 1)
    w, h = between(*config.occlusion_size, draw(B, K)) * W, between(*config.occlusion_size, draw(B, K)) * H
    x0, y0 = draw(B, K) * (W - w), draw(B, K) * (H - h)
    active = (torch.arange(K, device=device) < count[:, None]) & chosen[:, None]
    occluded = rectangle_masks(H, W, x0, y0, w, h, active)
    out = torch.where(occluded[:, None], torch.zeros_like(out), out)
    return out.clamp(0, 1)


class Augmenter(nn.Module):
    """:func:`augment_images` as a module, with its own generator seeded from ``config.seed``.

    Photometric only (no geometry change), so the targets of the crops stay valid. Without a
    ``generator`` argument, the module's generator is used (created on the images' device at the
    first call); two Augmenters with the same seed produce the same sequence of batches.

    Args:
        config: an :class:`AugmentConfig` or a mapping of its settings.

    Shape:
        forward(images (B, 3, H, W) in [0, 1], generator=None) -> (B, 3, H, W).

    Example:
        >>> augment = Augmenter(AugmentConfig(occlusion_probability=0.5, seed=1))
        >>> crops = augment(torch.rand(16, 3, 96, 96))
    """

    def __init__(self, config: AugmentConfig | dict | None = None):
        super().__init__()
        if config is None:
            config = AugmentConfig()
        self.config = AugmentConfig.from_dict(config) if isinstance(config, dict) else config
        self._generator: torch.Generator | None = None

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            if self._generator is None or self._generator.device != images.device:
                self._generator = torch.Generator(device=images.device).manual_seed(self.config.seed)
            generator = self._generator
        return augment_images(images, self.config, generator)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.to_dict().items())
