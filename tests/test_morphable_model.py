import numpy as np
import pytest
import torch
from dataclasses import replace

from diffface.model_format import save_model_npz
from diffface.morphable_model import MorphableModel, gaussian_prior, linear_model, load_morphable_model


def test_shape_matches_numpy_formula(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    g = torch.Generator().manual_seed(0)
    a_id, a_exp, beta = model.sample_coefficients(3, generator=g)
    vertices, albedo = model(a_id, a_exp, beta)
    d = tiny_model_data
    for b in range(3):
        ref = d.mean_shape + d.id_basis @ a_id[b].numpy() + d.exp_basis @ a_exp[b].numpy()
        np.testing.assert_allclose(vertices[b].numpy(), ref, atol=1e-4)
        ref_t = d.albedo_mean + d.albedo_basis @ beta[b].numpy()
        np.testing.assert_allclose(albedo[b].numpy(), ref_t, atol=1e-5)
    assert vertices.shape == (3, d.num_vertices, 3)


def test_zero_coefficients_give_mean(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    v, t = model(torch.zeros(2, model.id_dims), torch.zeros(2, model.exp_dims))
    torch.testing.assert_close(v[1], model.mean_shape)
    torch.testing.assert_close(t[0], model.albedo_mean)


def test_layout_and_landmarks(tiny_model_data):
    tiny_model_data.landmark_indices[60] = -1
    model = MorphableModel(tiny_model_data)
    assert model.layout.network_size == model.id_dims + model.exp_dims + 9
    v = model.mean_shape[None]
    lm = model.landmarks(v)
    assert lm.shape == (1, 68, 3) and torch.isnan(lm[0, 60]).all()
    torch.testing.assert_close(lm[0, 0], v[0, tiny_model_data.landmark_indices[0]])


def test_prior_is_sum_of_squared_sigma_units(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    params = replace(model.layout.zeros(2), alpha_id=2 * model.id_std.expand(2, -1))
    prior = model.prior(params)
    torch.testing.assert_close(prior["id"], torch.full((2,), 4.0 * model.id_dims))
    torch.testing.assert_close(gaussian_prior(torch.ones(1, 2), torch.tensor([0.0, 2.0])), torch.tensor([0.25]))


def test_gradcheck_linear_model():
    mean = torch.randn(4, 3, dtype=torch.float64)
    basis = torch.randn(12, 2, dtype=torch.float64, requires_grad=True)
    coeffs = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b, c: linear_model(mean, b, c), (basis, coeffs))


def test_save_load_roundtrip_and_fingerprint(tiny_model_data, tmp_path):
    path = save_model_npz(tiny_model_data, tmp_path / "m.npz")
    model = load_morphable_model(path)
    original = MorphableModel(tiny_model_data)
    assert model.fingerprint == original.fingerprint
    for name, buf in original.named_buffers():
        torch.testing.assert_close(getattr(model, name), buf)
    again = MorphableModel(model.to_data())
    assert again.fingerprint == original.fingerprint


def test_bad_coefficients(tiny_model_data):
    model = MorphableModel(tiny_model_data)
    with pytest.raises(ValueError, match="alpha_id"):
        model(torch.zeros(2, model.id_dims + 1), torch.zeros(2, model.exp_dims))
    with pytest.raises(ValueError, match="alpha_exp"):
        model.shape(torch.zeros(2, model.id_dims), torch.zeros(3, model.exp_dims + 2))


def test_devices(tiny_model_data, device):
    model = MorphableModel(tiny_model_data).to(device)
    v, t = model(torch.zeros(1, model.id_dims, device=device), torch.zeros(1, model.exp_dims, device=device))
    assert v.device.type == device.type
