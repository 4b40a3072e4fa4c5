import math

import pytest
import torch

from diffface.camera import perspective_project
from diffface.lighting import ambient_sh_coefficients
from diffface.morphable_model import load_morphable_model
from diffface.renderers import MeshRasterizer, MeshRenderer, NormalShader, RasterSettings, SHShader


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


def _camera(B, yaw=0.0, dtype=torch.float32):
    return dict(angles=torch.tensor([[0.0, yaw, 0.0]] * B, dtype=dtype),
                translation=torch.tensor([[0.0, 0.0, 1100.0]] * B, dtype=dtype),
                focal=torch.full((B, 1), 1000.0, dtype=dtype), principal_point=torch.full((B, 2), 63.5, dtype=dtype))


def test_renders_the_face_where_its_landmarks_project(model):
    renderer = MeshRenderer(MeshRasterizer(RasterSettings(image_size=128)), SHShader(background=0.0))
    vertices = model.mean_shape[None].expand(2, -1, -1)
    albedo = model.albedo(batch=2)
    cam = _camera(2, yaw=0.0)
    cam["angles"][1, 1] = math.radians(40)
    out = renderer(vertices, model.triangles, albedo, ambient_sh_coefficients(2), **cam)
    assert out.images.shape == (2, 128, 128, 3)
    uv, _ = perspective_project(model.landmarks(vertices), cam["angles"], cam["translation"], cam["focal"],
                                cam["principal_point"])
    # interior landmarks (brows, nose, eyes, mouth) of a frontal face fall on covered pixels
    inner = uv[0, 17:].round().long()
    assert out.fragments.mask[0, inner[:, 1], inner[:, 0]].float().mean() > 0.95
    # with ambient light the image shows the albedo itself
    centre = out.fragments.mask[0]
    assert out.images[0][centre].min() >= 0 and out.images[0][centre].max() <= 1
    # turning the head moves the silhouette: the coverage differs between the two poses
    assert (out.fragments.mask[0] != out.fragments.mask[1]).float().mean() > 0.02


def test_camera_set_at_construction_is_overridable(model):
    from diffface.camera import PerspectiveCamera

    cam = _camera(1)
    renderer = MeshRenderer(MeshRasterizer(RasterSettings(image_size=64)), NormalShader(as_colour=True),
                            camera=PerspectiveCamera(**cam))
    near = renderer(model.mean_shape[None], model.triangles)
    far = renderer(model.mean_shape[None], model.triangles, translation=torch.tensor([[0.0, 0.0, 2200.0]]))
    assert far.fragments.mask.sum() < 0.4 * near.fragments.mask.sum()


def test_frontal_normals_face_the_camera(model):
    renderer = MeshRenderer(MeshRasterizer(RasterSettings(image_size=96)), NormalShader())
    out = renderer(model.mean_shape[None], model.triangles, **_camera(1))
    normals = out.images[0][out.fragments.mask[0]]
    assert (normals[:, 2] > 0).float().mean() > 0.97  # +z of the lighting frame points to the camera


def test_gradients_reach_vertices_albedo_and_lighting(model):
    renderer = MeshRenderer(MeshRasterizer(RasterSettings(image_size=64)), SHShader())
    vertices = model.mean_shape[None].clone().requires_grad_()
    albedo = model.albedo(batch=1).clone().requires_grad_()
    sh = ambient_sh_coefficients(1, direction=(0.3, 0.2, 1.0), directional=0.5).requires_grad_()
    out = renderer(vertices, model.triangles, albedo, sh, **_camera(1))
    out.images.pow(2).sum().backward()
    for name, t in (("vertices", vertices), ("albedo", albedo), ("sh", sh)):
        assert t.grad is not None and t.grad.abs().sum() > 0, name
