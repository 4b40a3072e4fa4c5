import pytest
import torch

from diffface.alignment import ProcrustesAlign, procrustes
from diffface.camera import euler_to_rotation


def _random_similarity(batch, generator):
    rotation = euler_to_rotation(torch.randn(batch, 3, generator=generator, dtype=torch.float64))
    translation = torch.randn(batch, 3, generator=generator, dtype=torch.float64) * 10
    scale = 0.5 + torch.rand(batch, generator=generator, dtype=torch.float64)
    return rotation, translation, scale


@pytest.mark.parametrize("with_scale", [False, True])
def test_recovers_a_known_transform(with_scale):
    g = torch.Generator().manual_seed(0)
    points = torch.randn(3, 50, 3, generator=g, dtype=torch.float64) * 30
    rotation, translation, scale = _random_similarity(3, g)
    if not with_scale:
        scale = torch.ones_like(scale)
    moved = scale[:, None, None] * points @ rotation.transpose(1, 2) + translation[:, None]
    fit = procrustes(points, moved, with_scale=with_scale)
    torch.testing.assert_close(fit.rotation, rotation)
    torch.testing.assert_close(fit.translation, translation)
    torch.testing.assert_close(fit.scale, scale)
    torch.testing.assert_close(ProcrustesAlign(with_scale)(points, moved), moved)


def test_never_returns_a_reflection_and_minimises_the_error():
    g = torch.Generator().manual_seed(1)
    points = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    mirrored = points * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64) + 0.01 * torch.randn(2, 30, 3, generator=g)
    fit = procrustes(points, mirrored)
    torch.testing.assert_close(torch.linalg.det(fit.rotation), torch.ones(2, dtype=torch.float64))
    error = (fit.apply(points) - mirrored).pow(2).sum()
    for _ in range(20):  # no random rotation near the optimum does better
        rotation = fit.rotation @ euler_to_rotation(torch.randn(2, 3, generator=g, dtype=torch.float64) * 0.05)
        other = points @ rotation.transpose(1, 2) + fit.translation[:, None]
        assert (other - mirrored).pow(2).sum() >= error - 1e-9


def test_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        procrustes(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="target"):
        procrustes(torch.zeros(1, 5, 3), torch.full((1, 5, 3), float("nan")))
    with pytest.raises(ValueError, match="target"):
        procrustes(torch.zeros(1, 5, 3), torch.zeros(1, 4, 3))
