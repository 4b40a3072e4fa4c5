import pytest
import torch
from dataclasses import replace

from diffface.lighting import ambient_sh_coefficients
from diffface.morphable_model import load_morphable_model
from diffface.renderers import FaceRenderer, MeshRasterizer, MeshRenderer, RasterSettings, SHShader


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


def _params(model, batch=2):
    params = model.layout.zeros(batch)
    params.translation[:, 2] = 1100.0
    params.focal[:] = 350.0
    params.principal_point[:] = 47.5
    params.angles[:, 1] = torch.linspace(-0.4, 0.4, batch)
    params = replace(params, sh=ambient_sh_coefficients(batch, ambient=0.7, direction=(0.3, 0.4, 1.0),
                                                        directional=0.3))
    params.alpha_id[:, 0] = model.id_std[0]
    params.beta[:, 1] = model.albedo_std[1]
    return params


def test_face_renderer_equals_mesh_renderer_on_model_output(model):
    params = _params(model)
    out = FaceRenderer(model, 96, backend="builtin")(params)
    vertices, albedo = model.from_parameters(params)
    reference = MeshRenderer(MeshRasterizer(RasterSettings(image_size=96)), SHShader())(
        vertices, model.triangles, albedo, params.sh, angles=params.angles, translation=params.translation,
        focal=params.focal, principal_point=params.principal_point)
    torch.testing.assert_close(out.images, reference.images)
    assert torch.equal(out.fragments.pix_to_face, reference.fragments.pix_to_face)
    assert 0.2 < out.fragments.mask.float().mean() < 0.9


def test_background_shows_where_no_face_is(model):
    params = _params(model)
    background = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    plain = FaceRenderer(model, 96, backend="builtin")(params)
    out = FaceRenderer(model, 96, backend="builtin")(params, background=background)
    mask = out.fragments.mask
    torch.testing.assert_close(out.images[~mask], background.permute(0, 2, 3, 1)[~mask])
    torch.testing.assert_close(out.images[mask], plain.images[mask])


def test_missing_lighting_is_an_error(model):
    params = replace(_params(model), sh=None)
    with pytest.raises(ValueError, match="SH lighting"):
        FaceRenderer(model, 32, backend="builtin")(params)


def test_unknown_backend_is_an_error(model):
    with pytest.raises(ValueError, match="unknown rasterizer backend"):
        FaceRenderer(model, 32, backend="opengl")
