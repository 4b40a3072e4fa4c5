import torch

from diffface.morphable_model import load_morphable_model
from diffface.renderers import UVFrame


def test_linear_values_are_reproduced_exactly():
    model = load_morphable_model("builtin")
    frame = UVFrame(model.uv, model.triangles, size=64)
    assert frame.mask.float().mean() > 0.5  # the layout fills most of the UV square
    image = frame(model.uv[None].double())  # (1, 2, 64, 64)
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    expected = torch.stack([cols / 63, 1 - rows / 63]).double()
    torch.testing.assert_close(image[0][:, frame.mask], expected[:, frame.mask], atol=1e-5, rtol=0)
    assert image[0][:, ~frame.mask].abs().max() == 0


def test_constant_values_and_batch():
    model = load_morphable_model("builtin")
    frame = UVFrame(model.uv, model.triangles, size=32)
    values = torch.ones(3, model.num_vertices, 3) * torch.tensor([1.0, 2.0, 3.0])[:, None, None]
    image = frame(values)
    assert image.shape == (3, 3, 32, 32)
    torch.testing.assert_close(image[:, :, frame.mask], (torch.tensor([1.0, 2.0, 3.0])[:, None, None]
                                                         .expand(3, 3, int(frame.mask.sum()))))
