import math

import pytest
import torch

from diffface.camera import project_points
from diffface.lighting import ambient_sh_coefficients
from diffface.morphable_model import load_morphable_model
from diffface.renderers import (MeshRasterizer, MeshRenderer, RasterSettings, SHShader, VertexRenderer,
                                depth_visibility, normal_visibility, sample_image_at_points)


def test_bilinear_sampling_is_exact_on_a_linear_ramp_and_flags_outside():
    H, W = 20, 30
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                                indexing="ij")
    image = torch.stack([cols, rows, 2 * cols + 3 * rows])[None]  # (1, 3, H, W)
    points = torch.tensor([[[0.0, 0.0], [12.25, 7.5], [29.0, 19.0], [3.9, 18.1], [-1.0, 5.0], [31.0, 2.0]]],
                          dtype=torch.float64)
    samples, inside = sample_image_at_points(image, points)
    assert inside[0].tolist() == [True, True, True, True, False, False]
    u, v = points[0, :4, 0], points[0, :4, 1]
    torch.testing.assert_close(samples[0, :4], torch.stack([u, v, 2 * u + 3 * v], -1))


def test_normal_visibility_of_a_sphere_seen_from_the_camera():
    d = torch.nn.functional.normalize(torch.randn(1, 2000, 3, dtype=torch.float64), dim=-1)
    centre = torch.tensor([0.0, 0.0, 10.0], dtype=torch.float64)
    visible = normal_visibility(centre + d, d)
    # exactly the cap facing the camera: n·(-p) > 0  <=>  d_z < -1/10 for a unit sphere at distance 10
    torch.testing.assert_close(visible[0], d[0, :, 2] < -0.1)


@pytest.mark.parametrize("yaw_deg", [0.0, 35.0])
def test_texture_term_inputs_agree_with_a_rendered_image(yaw_deg):
    """Sampling an image rendered with the same parameters gives back the vertex colours."""
    model = load_morphable_model("builtin")
    size = 192
    cam = dict(angles=torch.tensor([[0.1, math.radians(yaw_deg), 0.05]]), translation=torch.tensor([[0.0, 0, 900.0]]),
               focal=torch.tensor([[1000.0]]), principal_point=torch.tensor([[95.5, 95.5]]))
    sh = ambient_sh_coefficients(1, ambient=0.8, direction=(0.4, 0.3, 1.0), directional=0.4)
    vertices, albedo = model(torch.zeros(1, model.id_dims), torch.zeros(1, model.exp_dims))
    image = MeshRenderer(MeshRasterizer(RasterSettings(image_size=size)), SHShader())(
        vertices, model.triangles, albedo, sh, **cam).images.permute(0, 3, 1, 2)
    out = VertexRenderer(model.uv, model.triangles, uv_size=96)(vertices, albedo, sh, image, **cam)
    assert out.rendered_uv.shape == out.target_uv.shape == (1, 3, 96, 96)
    mask = out.mask_uv[0, 0] > 0
    assert mask.float().mean() > (0.4 if yaw_deg == 0 else 0.25)
    diff = (out.rendered_uv - out.target_uv).abs()[0][:, mask]
    # self-occluded vertices (e.g. behind the nose when turned) and silhouette pixels disagree;
    # the bulk agrees closely
    assert diff.median() < 0.01
    assert (diff.max(0).values < 0.05).float().mean() > 0.9
    if yaw_deg:
        # the side turned away has fewer visible vertices
        x = model.mean_shape[:, 0]
        assert out.visible[0, x > 40].float().mean() < out.visible[0, x < -40].float().mean()


def _grid_plane(x0: float, x1: float, y0: float, y1: float, z: float, n: int = 9):
    """A square grid of n x n vertices in the plane at depth z, camera space. Shape: (n², 3), (2(n-1)², 3)."""
    xs, ys = torch.meshgrid(torch.linspace(x0, x1, n), torch.linspace(y0, y1, n), indexing="xy")
    points = torch.stack([xs.flatten(), ys.flatten(), torch.full((n * n,), z)], -1)
    index = torch.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1].flatten(), index[:-1, 1:].flatten(), index[1:, :-1].flatten(), index[1:, 1:].flatten()
    return points, torch.cat([torch.stack([a, b, c], -1), torch.stack([b, d, c], -1)])


def test_depth_visibility_hides_what_a_nearer_surface_covers():
    """A plane at depth 100 half covered by a smaller plane at depth 80: exactly its vertices behind the small
    plane (strictly inside its image) are hidden; a tolerance beyond the 20 mm gap hides none; the near plane
    and the uncovered half stay visible."""
    back, back_faces = _grid_plane(-40, 40, -40, 40, 100.0)
    front, front_faces = _grid_plane(-21, 1, -21, 21, 80.0, n=5)  # covers x in [-20, 0] at depth 100
    points_camera = torch.cat([back, front])[None].double()
    faces = torch.cat([back_faces, front_faces + len(back)])
    focal, centre = torch.tensor([[100.0]]).double(), torch.tensor([[64.0, 64.0]]).double()
    points = project_points(points_camera, focal, centre)
    visible = depth_visibility(points_camera, points, faces, (128, 128), tolerance=5.0)[0]
    # the front plane spans x/z in [-21/80, 1/80]; a back vertex is covered when x/100 lies strictly inside
    ratio_x, ratio_y = back[:, 0] / 100, back[:, 1] / 100
    covered = (ratio_x > -21 / 80 + 0.02) & (ratio_x < 1 / 80 - 0.02) & (ratio_y.abs() < 21 / 80 - 0.02)
    clear = (ratio_x < -21 / 80 - 0.02) | (ratio_x > 1 / 80 + 0.02) | (ratio_y.abs() > 21 / 80 + 0.02)
    assert covered.sum() >= 6 and not visible[:len(back)][covered].any()
    assert visible[:len(back)][clear].all() and visible[len(back):].all()
    assert depth_visibility(points_camera, points, faces, (128, 128), tolerance=25.0).all()
