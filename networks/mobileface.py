"""MobileFace: the method's MobileNet-style regressor from a 96×96 face crop to the 118 parameters.

Architecture (``width=10``, the method's network; MobileNet v1 channels scaled by ``width / 32``):

======  ===========================  ======  =========  ==========
block   layer                        stride  channels   map (96 px)
======  ===========================  ======  =========  ==========
stem    conv 3×3×3×10 + BN + ReLU    2       10         48
1       dw 3×3 + pw 1×1 (BN + ReLU)  1       20         48
2       dw + pw                      2       40         24
3       dw + pw                      1       40         24
4       dw + pw                      2       80         12
5       dw + pw                      1       80         12
6       dw + pw                      2       160        6
7-11    5 × (dw + pw)                1       160        6
12      dw (**no padding**) + pw     2       320        2
13      dw + pw                      1       320        2
head    global average pool (2×2), fully connected 320×118
======  ===========================  ======  =========  ==========

MobileNet's five stride-2 stages with padding 1 leave a 3×3 map at 96 px (96/32); the method states
a 2×2 map before pooling, so the last stride-2 depthwise convolution is unpadded:
``floor((6 − 3) / 2) + 1 = 2``. This keeps the layer count, widths and strides of MobileNet and only
drops the border of the last downsampling, the cheapest change giving the stated map.

Every convolution has no bias and is followed by BatchNorm and ReLU, so BatchNorm folds into the
convolution for export (:func:`fold_batchnorm`); the forward pass is plain conv/BN/ReLU/pool/linear
with static shapes and no data-dependent control flow.

Input: RGB in ``[0, 1]``, ``(B, 3, 96, 96)``. Output: the *normalised* parameter vector (see
:class:`~diffface.params.ParamNormalizer`); :class:`~diffface.networks.predictor.FaceRegressor` adds the
denormalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from diffface.checks import check_shape

# (output channels at MobileNet v1 width 1.0, stride) of the 13 depthwise-separable blocks
MOBILENET_V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
MOBILENET_V1_STEM = 32


@dataclass(frozen=True)
class MobileFaceConfig:
    """Hyper-parameters of :class:`MobileFace` (stored in checkpoints).

    Attributes:
        width: channels of the first convolution; the other layers scale MobileNet v1 by ``width / 32``
            (10: the method's network, 320 channels at the end; 32: MobileNet v1 width 1.0).
        num_outputs: length of the regressed vector (118 for BFM + FaceWarehouse).
        input_size: side of the square input crop (pixels).
        pad_last_downsample: pad the last stride-2 depthwise convolution as MobileNet does (3×3 map at
            96 px) instead of the method's 2×2 map.
    """

    width: int = 10
    num_outputs: int = 118
    input_size: int = 96
    pad_last_downsample: bool = False

    def __post_init__(self):
        if self.width < 1 or self.num_outputs < 1 or self.input_size < 32:
            raise ValueError(f"MobileFaceConfig: width and num_outputs must be >= 1 and input_size >= 32, got {self}")

    def channels(self) -> list[int]:
        """Output channels of the stem and of the 13 blocks."""
        scale = self.width / MOBILENET_V1_STEM
        return [self.width] + [max(1, round(c * scale)) for c, _ in MOBILENET_V1_BLOCKS]

    def to_dict(self) -> dict:
        return asdict(self)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
                 groups: int = 1) -> nn.Sequential:
    """Convolution without bias + BatchNorm + ReLU (foldable into one convolution)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DepthwiseSeparable(nn.Sequential):
    """Depthwise 3×3 + pointwise 1×1 convolution, each with BatchNorm and ReLU.

    Shape:
        (B, C_in, H, W) -> (B, C_out, H', W') with ``H' = floor((H + 2·padding − 3) / stride) + 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, padding: int = 1):
        super().__init__(conv_bn_relu(in_channels, in_channels, 3, stride, padding, groups=in_channels),
                         conv_bn_relu(in_channels, out_channels, 1, 1, 0))


class MobileFace(nn.Module):
    """The MobileNet-style parameter regressor (see the module docstring for the table).

    Args:
        config: :class:`MobileFaceConfig`.

    Shape:
        forward: images (B, 3, S, S) in [0, 1] -> normalised parameters (B, num_outputs);
        features: (B, 3, S, S) -> (B, C, 2, 2) at S = 96.

    Example:
        >>> net = MobileFace(MobileFaceConfig())
        >>> net(torch.rand(2, 3, 96, 96)).shape
        torch.Size([2, 118])
    """

    def __init__(self, config: MobileFaceConfig = MobileFaceConfig()):
        super().__init__()
        self.config = config
        channels = config.channels()
        layers = [conv_bn_relu(3, channels[0], 3, 2, 1)]
        last_downsample = max(i for i, (_, s) in enumerate(MOBILENET_V1_BLOCKS) if s == 2)
        for i, ((_, stride), c_in, c_out) in enumerate(zip(MOBILENET_V1_BLOCKS, channels[:-1], channels[1:])):
            padding = 0 if (i == last_downsample and not config.pad_last_downsample) else 1
            layers.append(DepthwiseSeparable(c_in, c_out, stride, padding))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], config.num_outputs)

    @property
    def num_features(self) -> int:
        return self.fc.in_features

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The convolutional map before pooling. Shape: (B, 3, S, S) -> (B, C, h, w)."""
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # exporters see static shapes only
            check_shape(images, ["B", 3, self.config.input_size, self.config.input_size], "images")
        return self.features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(images)), 1))


def mobileface(width: int = 10, num_outputs: int = 118, input_size: int = 96,
               pad_last_downsample: bool = False) -> MobileFace:
    """A :class:`MobileFace` from keyword settings (the registry's constructor)."""
    return MobileFace(MobileFaceConfig(width, num_outputs, input_size, pad_last_downsample))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every Conv2d + BatchNorm2d pair folded into one biased Conv2d.

    The copy computes the same function as ``model.eval()`` up to rounding and has no BatchNorm left
    inside :class:`MobileFace`'s ``conv_bn_relu`` blocks (the form exporters and TensorRT prefer).
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            for j in range(len(children) - 1):
                conv, bn = children[j], children[j + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module[j] = fuse_conv_bn_eval(conv, bn)
                    module[j + 1] = nn.Identity()
    return folded


def count_parameters(model: nn.Module) -> int:
    """Number of learnable scalars."""
    return sum(p.numel() for p in model.parameters())
