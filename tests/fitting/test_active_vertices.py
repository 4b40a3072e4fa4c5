import pytest
import torch
from dataclasses import replace

from diffface.fitting.active_vertices import ActiveVertices
from diffface.fitting.texture_fitting import TextureFitConfig, _Stage2Energy
from diffface.geometry import vertex_normals
from diffface.morphable_model import load_morphable_model
from diffface.renderers import FaceRenderer, UVFrame
from diffface.app.synth import SceneConfig, random_backgrounds, sample_scenes
from diffface.landmark_marching import project_landmarks

# a coarse UV frame reads only part of the built-in mesh, as a 64-texel frame does on a BFM-sized one
UV_SIZE = 12


@pytest.fixture(scope="module")
def model():
    return load_morphable_model("builtin")


def test_active_vertices_cover_what_stage_2_reads_and_match_the_full_model(model):
    active = ActiveVertices.build(model, UV_SIZE)
    frame = UVFrame(model.uv, model.triangles, UV_SIZE)
    R, V = active.num_rendered, model.num_vertices
    assert R < len(active.vertices) < V  # a real subset, and one-rings beyond the rendered vertices
    rendered = set(active.vertices[:R].tolist())
    read = set(frame.texel_vertices[frame.mask].flatten().tolist())
    read |= set(model.landmark_indices[model.landmark_indices >= 0].tolist())
    read |= set(model.contour_lines[model.contour_lines >= 0].tolist())
    assert rendered == read
    # local indices point back at the same model vertices
    ids = active.vertices
    assert torch.equal(ids[active.landmark_indices], model.landmark_indices)
    lines = active.contour_lines
    assert torch.equal(torch.where(lines >= 0, ids[lines.clamp_min(0)], lines), model.contour_lines)
    texels = active.uv_frame.texel_vertices[frame.mask]
    assert torch.equal(ids[texels], frame.texel_vertices[frame.mask])

    g = torch.Generator().manual_seed(0)
    a_id = torch.randn(3, model.id_dims, generator=g) * model.id_std
    a_exp = torch.randn(3, model.exp_dims, generator=g) * model.exp_std
    beta = torch.randn(3, model.tex_dims, generator=g) * model.albedo_std
    full = model.shape(a_id, a_exp)
    local = active.shape(a_id, a_exp)
    torch.testing.assert_close(local, full[:, ids], atol=1e-4, rtol=1e-5)
    # the rendered vertices' normals are complete: their whole one-ring is among the active triangles
    torch.testing.assert_close(active.normals(full[:, ids]), vertex_normals(full, model.triangles)[:, ids[:R]],
                               atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(active.albedo(beta), model.albedo(beta)[:, ids[:R]], atol=1e-5, rtol=1e-5)
    values = torch.randn(3, V, 4, generator=g)
    torch.testing.assert_close(active.uv_frame(values[:, ids[:R]]), frame(values))


def test_restrict_false_keeps_every_vertex(model):
    active = ActiveVertices.build(model, UV_SIZE, restrict=False)
    assert active.num_rendered == len(active.vertices) == model.num_vertices
    assert torch.equal(active.triangles, model.triangles)


@pytest.mark.parametrize("norm", ["l1", "l21"])
def test_stage_2_energy_on_active_vertices_equals_the_full_mesh(model, norm):
    truth = sample_scenes(model, 2, SceneConfig(seed=3, image_size=96, focal_px=430.0))
    with torch.no_grad():
        photos = FaceRenderer(model, 96, backend="builtin")(truth, random_backgrounds(2, 96, seed=3)).images
    images = photos.clamp(0, 1).permute(0, 3, 1, 2).contiguous()
    landmarks, _ = project_landmarks(model, truth)
    terms = {}
    for restrict in (True, False):
        config = TextureFitConfig(norm=norm, uv_size=UV_SIZE, active_vertices=restrict)
        params = replace(truth.detach(), alpha_exp=truth.alpha_exp.detach().clone().requires_grad_(True))
        out = _Stage2Energy(model, images, landmarks, config)(params)
        grad, = torch.autograd.grad(out["energy"].sum(), params.alpha_exp)
        terms[restrict] = {k: v for k, v in out.items() if k != "output"} | {"grad": grad}
    for name, value in terms[True].items():
        torch.testing.assert_close(value, terms[False][name], atol=1e-5, rtol=1e-4, msg=name)
