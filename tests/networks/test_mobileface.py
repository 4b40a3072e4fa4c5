"""MobileFace: the stated architecture, its parameter count by hand, the registry, BatchNorm folding."""

import pytest
import torch
from torch import nn

from diffface.networks import MobileFace, MobileFaceConfig, count_parameters, create_model, fold_batchnorm, list_models


def _convs(net):
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def test_stated_architecture():
    net = create_model("mobileface")
    convs = _convs(net)
    assert tuple(convs[0].weight.shape) == (10, 3, 3, 3)  # first convolution 3x3x3x10
    assert convs[-1].out_channels == 320
    assert tuple(net.fc.weight.shape) == (118, 320)  # fully connected 320x118
    kinds = [("dw" if c.groups > 1 else "conv") + f"{c.kernel_size[0]}" for c in convs]
    assert kinds == ["conv3"] + ["dw3", "conv1"] * 13  # interleaved depthwise 3x3 + pointwise 1x1
    bn_after_each = [type(m) for s in net.modules() if isinstance(s, nn.Sequential) and len(s) == 3
                     for m in s]
    assert bn_after_each.count(nn.BatchNorm2d) == 27 and bn_after_each.count(nn.ReLU) == 27
    features = net.forward_features(torch.rand(2, 3, 96, 96))
    assert features.shape == (2, 320, 2, 2)  # pooled over a 2x2 map
    assert net(torch.rand(2, 3, 96, 96)).shape == (2, 118)


def test_padded_variant_leaves_mobilenets_3x3_map():
    net = create_model("mobileface", pad_last_downsample=True)
    assert net.forward_features(torch.rand(1, 3, 96, 96)).shape == (1, 320, 3, 3)


def test_parameter_count_by_hand():
    stem = 3 * 3 * 3 * 10 + 2 * 10
    blocks = [(10, 20), (20, 40), (40, 40), (40, 80), (80, 80), (80, 160)] + [(160, 160)] * 5 + [(160, 320), (320, 320)]
    separable = sum(9 * c_in + 2 * c_in + c_in * c_out + 2 * c_out for c_in, c_out in blocks)
    fc = 320 * 118 + 118
    net = create_model("mobileface")
    assert count_parameters(net) == stem + separable + fc == 365_538
    assert abs(count_parameters(net) * 4 / 1e6 - 1.46) < 0.01  # "about 1.5 MB" in float32


def test_registry_and_widths():
    assert "mobileface" in list_models()
    wide = create_model("mobileface", width=32, num_outputs=78)
    assert _convs(wide)[-1].out_channels == 1024 and wide.fc.out_features == 78  # MobileNet v1 at width 1.0
    narrow = create_model("mobileface", width=4)
    assert narrow(torch.rand(1, 3, 96, 96)).shape == (1, 118)
    with pytest.raises(ValueError, match="unknown network 'resnet'.*mobileface"):
        create_model("resnet")
    with pytest.raises(ValueError, match="bad settings"):
        create_model("mobileface", depth=3)
    with pytest.raises(ValueError, match="width"):
        MobileFaceConfig(width=0)


def test_wrong_input_shape_names_the_tensor():
    with pytest.raises(ValueError, match="images"):
        create_model("mobileface")(torch.rand(1, 3, 64, 64))


def test_folded_batchnorm_computes_the_same_function():
    torch.manual_seed(0)
    net = MobileFace()
    net.train()
    for _ in range(3):  # move the running statistics away from their initial values
        net(torch.rand(4, 3, 96, 96))
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(3, 3, 96, 96)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-4)


def test_traces_with_static_shapes():
    net = create_model("mobileface", width=4).eval()
    x = torch.rand(2, 3, 96, 96)
    traced = torch.jit.trace(net, x)
    torch.testing.assert_close(traced(x), net(x))
