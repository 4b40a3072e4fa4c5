"""Losses against slow references (Python loops, float64), gradcheck, and the photometric lighting fit."""

import math

import pytest
import torch

from diffface.camera import perspective_project
from diffface.lighting import ambient_sh_coefficients, lighting_design, sh_shading, solve_sh_lighting
from diffface.networks import (VertexProjectionLoss, mse_parameter_loss, per_vertex_distance,
                               vertex_projection_loss, vertex_subset)
from diffface.networks.photometric import PhotometricLoss


def _reference_2d3d(S, P, S_gt, P_gt, norm, w3, w2):
    """Sum over vertices in plain Python, divided by the count (the documented mean)."""
    def length(vector):
        return math.sqrt(sum(c * c for c in vector)) if norm == "l2" else sum(abs(c) for c in vector)

    B, V = S.shape[:2]
    l3 = sum(length((S[b, v] - S_gt[b, v]).tolist()) for b in range(B) for v in range(V)) / (B * V)
    l2 = sum(length((P[b, v] - P_gt[b, v]).tolist()) for b in range(B) for v in range(V)) / (B * V)
    return l3, l2, w3 * l3 + w2 * l2


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_2d3d_matches_python_reference(norm):
    g = torch.Generator().manual_seed(0)
    S, S_gt = torch.randn(2, 7, 3, generator=g, dtype=torch.float64), torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    P, P_gt = torch.randn(2, 7, 2, generator=g, dtype=torch.float64), torch.randn(2, 7, 2, generator=g, dtype=torch.float64)
    terms = vertex_projection_loss(S, P, S_gt, P_gt, norm, weight_3d=0.5, weight_2d=2.0)
    l3, l2, total = _reference_2d3d(S, P, S_gt, P_gt, norm, 0.5, 2.0)
    assert float(terms["loss_3d"]) == pytest.approx(l3, rel=1e-12)
    assert float(terms["loss_2d"]) == pytest.approx(l2, rel=1e-12)
    assert float(terms["total"]) == pytest.approx(total, rel=1e-12)


def test_mse_matches_reference_and_checks_shapes():
    a, b = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    assert float(mse_parameter_loss(a, b)) == pytest.approx((1 + 0 + 4 + 16) / 4)
    with pytest.raises(ValueError, match="target"):
        mse_parameter_loss(a, b[:, :1])


@pytest.mark.parametrize("norm", ["l1", "l2"])
def test_gradcheck_2d3d(norm):
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, 4, d, generator=g, dtype=torch.float64, requires_grad=True) for d in (3, 2, 3, 2)]
    assert torch.autograd.gradcheck(lambda S, P, Sg, Pg: vertex_projection_loss(S, P, Sg, Pg, norm)["total"], inputs)


def test_zero_residual_has_zero_not_nan_gradient():
    residual = torch.zeros(1, 3, 3, requires_grad=True)
    per_vertex_distance(residual, "l2").sum().backward()
    assert torch.equal(residual.grad, torch.zeros_like(residual))
    with pytest.raises(ValueError, match="norm"):
        per_vertex_distance(residual, "l3")


def test_module_goes_through_model_and_camera(tiny_dataset, make_parameters):
    model = tiny_dataset.model.double()
    params = make_parameters(model, 3, seed=5).double()
    groups = model.layout.unpack(params)
    S_gt = model.shape(groups.alpha_id, groups.alpha_exp)
    P_gt, _ = perspective_project(S_gt, groups.angles, groups.translation, groups.focal, groups.principal_point)
    loss = VertexProjectionLoss(model, norm="l2")
    assert float(loss(params, S_gt, P_gt)["total"]) == pytest.approx(0.0, abs=1e-9)
    moved = params.clone()
    moved[:, model.layout.slices["translation"]] += torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    terms = loss(moved, S_gt, P_gt)
    assert float(terms["loss_3d"]) == pytest.approx(0.0, abs=1e-9)  # translation does not move S(p)
    assert float(terms["loss_2d"]) > 0.5  # but moves the projections by ~f/z px
    subset = VertexProjectionLoss(model, num_vertices=10, seed=3)
    assert subset.vertex_indices.shape == (10,)
    params_grad = moved.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: subset(p, S_gt, P_gt)["total"], [params_grad])


def test_vertex_subset_is_fixed_and_sorted():
    a, b = vertex_subset(100, 10, seed=2), vertex_subset(100, 10, seed=2)
    assert torch.equal(a, b) and torch.equal(a, a.sort().values) and len(a.unique()) == 10
    assert vertex_subset(100, 0) is None and vertex_subset(100, 500) is None


def test_sh_fit_recovers_the_lighting():
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(2, 200, 3, generator=g, dtype=torch.float64), dim=-1)
    albedo = 0.3 + 0.5 * torch.rand(2, 200, 3, generator=g, dtype=torch.float64)
    truth = ambient_sh_coefficients(2, 0.8, (0.3, 0.2, 1.0), 0.6, dtype=torch.float64)
    colors = sh_shading(albedo, normals, truth)
    fitted = solve_sh_lighting(lighting_design(albedo, normals), colors, torch.ones(2, 200, dtype=torch.float64),
                               ridge=1e-12)
    torch.testing.assert_close(fitted, truth, atol=1e-8, rtol=1e-8)


def test_photometric_loss_is_finite_and_differentiable(tiny_dataset, make_parameters):
    model = tiny_dataset.model
    params = make_parameters(model, 2, seed=7).requires_grad_(True)
    images = torch.rand(2, 3, 96, 96)
    loss = PhotometricLoss(model, num_vertices=0)(params, images)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(params.grad).all()
    assert params.grad[:, model.layout.slices["translation"]].abs().sum() > 0  # the image sampling moves with t
