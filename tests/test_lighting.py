import math

import numpy as np
import pytest
import torch
from scipy import special

from diffface.lighting import (SHLighting, SH_ATTENUATION, ambient_sh_coefficients, default_lighting, lighting_design,
                               sh_basis, sh_irradiance, sh_shading, solve_sh_lighting)


def _real_sh_scipy(l, m, directions):
    """Real orthonormal SH from scipy's complex ones (Condon-Shortley phase cancels)."""
    x, y, z = directions.T
    polar = np.arccos(np.clip(z, -1, 1))
    azimuth = np.arctan2(y, x)
    if hasattr(special, "sph_harm_y"):
        def complex_sh(mm):
            return special.sph_harm_y(l, mm, polar, azimuth)
    else:  # scipy < 1.15
        def complex_sh(mm):
            return special.sph_harm(mm, l, azimuth, polar)
    if m == 0:
        return complex_sh(0).real
    if m > 0:
        return math.sqrt(2) * (-1) ** m * complex_sh(m).real
    return math.sqrt(2) * (-1) ** m * complex_sh(-m).imag


def _fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = math.pi * (1 + math.sqrt(5)) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def test_basis_matches_scipy_real_spherical_harmonics():
    d = _fibonacci_sphere(500)
    ours = sh_basis(torch.from_numpy(d)).numpy()
    order = [(0, 0), (1, -1), (1, 0), (1, 1), (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]
    for k, (l, m) in enumerate(order):
        np.testing.assert_allclose(ours[:, k], _real_sh_scipy(l, m, d), atol=1e-12, err_msg=f"Y_{l}{m}")


def test_basis_is_orthonormal_on_the_sphere():
    d = _fibonacci_sphere(200_000)
    Y = sh_basis(torch.from_numpy(d)).numpy()
    gram = Y.T @ Y * (4 * math.pi / len(d))
    np.testing.assert_allclose(gram, np.eye(9), atol=1e-4)


def test_irradiance_equals_clamped_cosine_integral():
    """Funk-Hecke: for band-limited light, E(n) = ∫ L(ω) max(n·ω, 0) dω exactly."""
    rng = np.random.default_rng(0)
    coeffs = rng.normal(size=(1, 9, 3))
    omega = _fibonacci_sphere(400_000)
    radiance = sh_basis(torch.from_numpy(omega)).numpy() @ coeffs[0]  # (N, 3)
    normals = _fibonacci_sphere(7) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    direct = np.stack([(np.maximum(omega @ n, 0)[:, None] * radiance).sum(0) * 4 * math.pi / len(omega)
                       for n in normals])
    ours = sh_irradiance(torch.from_numpy(normals)[None], torch.from_numpy(coeffs))[0].numpy()
    np.testing.assert_allclose(ours, direct, atol=2e-4)


def test_channel_major_layout_matches_9x3():
    coeffs = torch.randn(2, 9, 3, dtype=torch.float64)
    flat = coeffs.transpose(1, 2).reshape(2, 27)
    n = torch.nn.functional.normalize(torch.randn(2, 10, 3, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(sh_irradiance(n, flat), sh_irradiance(n, coeffs))


def test_ambient_light_reproduces_albedo_and_directional_adds_exactly():
    n = torch.nn.functional.normalize(torch.randn(1, 30, 3, dtype=torch.float64), dim=-1)
    albedo = torch.rand(1, 30, 3, dtype=torch.float64)
    light = ambient_sh_coefficients(1, ambient=1.0, dtype=torch.float64)
    torch.testing.assert_close(sh_shading(albedo, n, light), albedo)
    light = ambient_sh_coefficients(1, ambient=0.5, direction=(0, 0, 1), directional=0.7, dtype=torch.float64)
    facing = sh_irradiance(torch.tensor([[[0.0, 0, 1]]], dtype=torch.float64), light)
    torch.testing.assert_close(facing, torch.full((1, 1, 3), 1.2, dtype=torch.float64))


def test_attenuation_constants():
    assert SH_ATTENUATION[0] == pytest.approx(math.pi)
    assert SH_ATTENUATION[1] == pytest.approx(2 * math.pi / 3)
    assert SH_ATTENUATION[4] == pytest.approx(math.pi / 4)


def test_gradcheck_shading():
    albedo = torch.rand(2, 4, 3, dtype=torch.float64, requires_grad=True)
    normals = torch.nn.functional.normalize(torch.randn(2, 4, 3, dtype=torch.float64), dim=-1).requires_grad_()
    coeffs = torch.randn(2, 27, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sh_shading, (albedo, normals, coeffs))


def test_module_and_bad_input(device, dtype):
    shade = SHLighting(ambient_sh_coefficients(2, dtype=dtype, device=device))
    albedo = torch.rand(2, 5, 3, dtype=dtype, device=device)
    normals = torch.nn.functional.normalize(torch.randn(2, 5, 3, dtype=dtype, device=device), dim=-1)
    torch.testing.assert_close(shade(albedo, normals), albedo)
    with pytest.raises(ValueError, match="sh_coefficients"):
        sh_shading(albedo, normals, torch.zeros(2, 26, dtype=dtype, device=device))
    with pytest.raises(ValueError, match="normals"):
        sh_irradiance(torch.zeros(2, 5, 4), torch.zeros(2, 27))
    with pytest.raises(ValueError, match="neither"):
        SHLighting()(albedo, normals)


def test_irradiance_equals_the_basis_expansion_with_gradients():
    g = torch.Generator().manual_seed(3)
    normals = torch.nn.functional.normalize(torch.randn(2, 40, 3, generator=g, dtype=torch.float64), dim=-1)
    coeffs = torch.randn(2, 27, generator=g, dtype=torch.float64)
    attenuation = torch.tensor(SH_ATTENUATION, dtype=torch.float64)
    expected = sh_basis(normals) @ (coeffs.reshape(2, 3, 9).transpose(1, 2) * attenuation[:, None])
    torch.testing.assert_close(sh_irradiance(normals, coeffs), expected, atol=1e-12, rtol=1e-12)
    normals.requires_grad_(True)
    coeffs.requires_grad_(True)
    assert torch.autograd.gradcheck(sh_irradiance, (normals[:, :6], coeffs))


def test_lighting_design_is_the_linear_map_of_sh_shading_and_the_solver_inverts_it():
    g = torch.Generator().manual_seed(4)
    normals = torch.nn.functional.normalize(torch.randn(2, 50, 3, generator=g, dtype=torch.float64), dim=-1)
    albedo = 0.2 + 0.6 * torch.rand(2, 50, 3, generator=g, dtype=torch.float64)
    light = torch.randn(2, 27, generator=g, dtype=torch.float64)
    design = lighting_design(albedo, normals)
    torch.testing.assert_close(torch.einsum("bnck,bck->bnc", design, light.reshape(2, 3, 9)),
                               sh_shading(albedo, normals, light))
    # per-channel weights: a corrupted channel of some points is ignored where its weight is zero
    colors = sh_shading(albedo, normals, light)
    weights = torch.ones_like(colors)
    colors[:, :10, 1] += 5.0
    weights[:, :10, 1] = 0.0
    torch.testing.assert_close(solve_sh_lighting(design, colors, weights, ridge=1e-12), light)
    assert default_lighting(3).shape == (3, 27)
