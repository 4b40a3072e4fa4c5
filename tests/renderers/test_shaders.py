import pytest
import torch

from diffface.lighting import ambient_sh_coefficients
from diffface.renderers import (AttributeShader, DepthShader, NormalShader, ShadingInput, SHShader, SilhouetteShader,
                                rasterize_meshes)


def _quad(z=500.0, dtype=torch.float64):
    """Two fronto-parallel triangles covering pixels [8, 24] x [8, 24] of a 32x32 image."""
    screen = torch.tensor([[[8.0, 8.0, z], [24.0, 8.0, z], [24.0, 24.0, z], [8.0, 24.0, z]]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    normals = torch.tensor([[[0.0, 0.0, 1.0]] * 4], dtype=dtype)
    return screen, faces, normals


def test_ambient_light_shows_albedo_and_background():
    screen, faces, normals = _quad()
    fragments = rasterize_meshes(screen, faces, (32, 32))
    albedo = torch.tensor([[[0.2, 0.4, 0.6]] * 4], dtype=torch.float64)
    mesh = ShadingInput(faces=faces, normals=normals, albedo=albedo,
                        sh=ambient_sh_coefficients(1, dtype=torch.float64))
    for per_pixel in (False, True):
        image = SHShader(per_pixel=per_pixel, background=(1.0, 0.0, 0.0))(fragments, mesh)
        assert image.shape == (1, 32, 32, 3)
        torch.testing.assert_close(image[0, 16, 16], albedo[0, 0])
        torch.testing.assert_close(image[0, 2, 2], torch.tensor([1.0, 0, 0], dtype=torch.float64))


def test_per_vertex_and_per_pixel_agree_for_flat_normals_and_differ_for_curved():
    screen, faces, normals = _quad()
    fragments = rasterize_meshes(screen, faces, (32, 32))
    albedo = torch.rand(1, 4, 3, dtype=torch.float64)
    sh = torch.randn(1, 27, dtype=torch.float64)
    mesh = ShadingInput(faces=faces, normals=normals, albedo=albedo, sh=sh)
    # per-vertex: shade then interpolate; per-pixel: interpolate then shade. Equal when shading is
    # linear in the interpolated quantities, i.e. for constant normals.
    torch.testing.assert_close(SHShader()(fragments, mesh), SHShader(per_pixel=True)(fragments, mesh))
    curved = torch.nn.functional.normalize(torch.tensor([[[-1.0, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]]],
                                                        dtype=torch.float64), dim=-1)
    mesh = ShadingInput(faces=faces, normals=curved, albedo=albedo, sh=sh)
    assert not torch.allclose(SHShader()(fragments, mesh), SHShader(per_pixel=True)(fragments, mesh))


def test_normals_depth_silhouette_attributes():
    screen, faces, normals = _quad(z=321.0)
    fragments = rasterize_meshes(screen, faces, (32, 32))
    mesh = ShadingInput(faces=faces, normals=normals, attributes=screen[..., :2])
    torch.testing.assert_close(NormalShader()(fragments, mesh)[0, 16, 16], normals[0, 0])
    torch.testing.assert_close(NormalShader(as_colour=True)(fragments, mesh)[0, 16, 16],
                               torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    depth = DepthShader(background=0.0)(fragments, mesh)
    assert depth[0, 16, 16, 0] == pytest.approx(321.0) and depth[0, 0, 0, 0] == 0
    silhouette = SilhouetteShader()(fragments, mesh)
    area = silhouette.sum().item()
    assert 16 * 16 <= area <= 17 * 17  # the 16x16 px square, with its border pixel centres
    # a fronto-parallel quad interpolates screen positions exactly: the attribute is the pixel centre
    uv = AttributeShader()(fragments, mesh)[0]
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    inside = fragments.mask[0]
    torch.testing.assert_close(uv[inside], torch.stack([cols, rows], -1).double()[inside])


def test_sh_gradients_match_finite_differences():
    screen, faces, normals = _quad()
    fragments = rasterize_meshes(screen, faces, (32, 32))
    albedo = torch.rand(1, 4, 3, dtype=torch.float64, requires_grad=True)
    sh = torch.randn(1, 27, dtype=torch.float64, requires_grad=True)

    def render(a, s):
        return SHShader()(fragments, ShadingInput(faces=faces, normals=normals, albedo=a, sh=s)).sum(-1)[:, ::4, ::4]

    assert torch.autograd.gradcheck(render, (albedo, sh))


def test_missing_inputs_raise():
    screen, faces, normals = _quad()
    fragments = rasterize_meshes(screen, faces, (32, 32))
    with pytest.raises(ValueError, match="albedo and SH"):
        SHShader()(fragments, ShadingInput(faces=faces, normals=normals))
    with pytest.raises(ValueError, match="attributes"):
        AttributeShader()(fragments, ShadingInput(faces=faces, normals=normals))
