"""Spherical-harmonics lighting (Ramamoorthi & Hanrahan, "An Efficient Representation for
Irradiance Environment Maps", SIGGRAPH 2001).

The incoming light is band-limited to order 2: ``L(ω) = Σ_{l≤2,m} L_lm · Y_lm(ω)`` per colour
channel (9 coefficients × RGB = 27). The irradiance at a surface of unit normal ``n`` is the
clamped-cosine convolution ``E(n) = ∫ L(ω) max(n·ω, 0) dω = Σ Â_l · L_lm · Y_lm(n)`` with
``Â_0 = π``, ``Â_1 = 2π/3``, ``Â_2 = π/4`` (exact for band-limited light, by Funk–Hecke).
The shaded colour of a Lambertian vertex is ``albedo ⊙ E(n)`` (as in Deep3DFaceRecon; no 1/π).

Basis order (real SH, orthonormal on the sphere), for ``n = (x, y, z)``:
``Y00 = c0``, ``Y1-1 = c1·y``, ``Y10 = c1·z``, ``Y11 = c1·x``, ``Y2-2 = c2·xy``, ``Y2-1 = c2·yz``,
``Y20 = c3·(3z² − 1)``, ``Y21 = c2·xz``, ``Y22 = c4·(x² − y²)`` with ``c0 = 1/(2√π)``,
``c1 = √3/(2√π)``, ``c2 = √15/(2√π)``, ``c3 = √5/(4√π)``, ``c4 = √15/(4√π)``.
Normals are in whatever frame the caller uses (model space for the method's fitting).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_shape
from .linear_algebra import solve_spd

SH_BANDS = 9
_C0 = 0.5 / math.sqrt(math.pi)
_C1 = math.sqrt(3.0) / (2.0 * math.sqrt(math.pi))
_C2 = math.sqrt(15.0) / (2.0 * math.sqrt(math.pi))
_C3 = math.sqrt(5.0) / (4.0 * math.sqrt(math.pi))
_C4 = math.sqrt(15.0) / (4.0 * math.sqrt(math.pi))
SH_ATTENUATION = (math.pi,) + (2.0 * math.pi / 3.0,) * 3 + (math.pi / 4.0,) * 5


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The 9 real spherical harmonics of order ≤ 2 evaluated at unit directions.

    Shape:
        normals: (*, 3) -> (*, 9).

    Example:
        >>> sh_basis(torch.tensor([[0., 0., 1.]]))[0, :3]
        tensor([0.2821, 0.0000, 0.4886])
    """
    check_shape(normals, ["*", 3], "normals")
    return torch.stack(_basis_terms(normals), -1)


def _basis_terms(normals: torch.Tensor) -> list[torch.Tensor]:
    """The 9 basis functions, each of shape ``normals.shape[:-1]``."""
    x, y, z = normals.unbind(-1)
    return [torch.full_like(x, _C0), _C1 * y, _C1 * z, _C1 * x,
            _C2 * x * y, _C2 * y * z, _C3 * (3.0 * z * z - 1.0), _C2 * x * z, _C4 * (x * x - y * y)]


def _coefficients(coefficients: torch.Tensor) -> torch.Tensor:
    """Accept ``(B, 27)`` (channel-major, as in :class:`~diffface.params.FaceParameters`) or ``(B, 9, 3)``."""
    if coefficients.ndim == 2:
        check_shape(coefficients, ["B", 27], "sh_coefficients")
        return coefficients.reshape(-1, 3, SH_BANDS).transpose(1, 2)
    check_shape(coefficients, ["B", SH_BANDS, 3], "sh_coefficients")
    return coefficients


def sh_irradiance(normals: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Irradiance ``E(n) = Σ_k Â_k L_k Y_k(n)`` per colour channel.

    The basis is built coefficient-major, ``(B, 9, N)``, and multiplied as ``Lᵀ·Y``, so that the matrix
    product's long axis is the vertices (about twice as fast forward and backward on the CPU as ``Y·L``
    with an inner dimension of 9; :func:`sh_basis` stays the reference the tests compare with).

    Args:
        normals: unit normals.
        coefficients: lighting ``L`` as (B, 9, 3) (coefficient, channel) or (B, 27) ordered
            channel-major (R's 9, G's 9, B's 9).

    Shape:
        normals: (B, N, 3) -> (B, N, 3).
    """
    check_shape(normals, ["B", "N", 3], "normals")
    coeffs = _coefficients(coefficients).to(normals.dtype)
    attenuation = torch.tensor(SH_ATTENUATION, dtype=normals.dtype, device=normals.device)
    basis = torch.stack(_basis_terms(normals), 1)  # (B, 9, N)
    return ((coeffs * attenuation[:, None]).transpose(1, 2) @ basis).transpose(1, 2)


def sh_shading(albedo: torch.Tensor, normals: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """The method's image formation per vertex (or pixel): ``albedo ⊙ E(n)``.

    Shape:
        albedo: (B, N, 3); normals: (B, N, 3); coefficients: (B, 9, 3) or (B, 27) -> (B, N, 3).

    Example:
        >>> light = ambient_sh_coefficients(1, ambient=1.0)
        >>> sh_shading(torch.full((1, 2, 3), 0.5), torch.tensor([[[0., 0, 1], [1., 0, 0]]]), light)
        tensor([[[0.5000, 0.5000, 0.5000],
                 [0.5000, 0.5000, 0.5000]]])
    """
    check_shape(albedo, ["B", "N", 3], "albedo")
    return albedo * sh_irradiance(normals, coefficients)


def ambient_sh_coefficients(batch: int, ambient: float = 1.0, direction: tuple[float, float, float] | None = None,
                            directional: float = 0.0, dtype: torch.dtype = torch.float32,
                            device: torch.device | str | None = None) -> torch.Tensor:
    """Lighting with uniform irradiance ``ambient`` plus an optional distant light.

    ``directional`` adds a distant light from unit direction ``d`` (model space), band-limited
    to order 2 (``L_lm ∝ Y_lm(d)``), scaled so a normal facing ``d`` receives exactly
    ``directional`` more irradiance than the ambient level.

    Shape:
        -> (B, 27), channel-major.
    """
    coeffs = torch.zeros(batch, SH_BANDS, dtype=dtype, device=device)
    coeffs[:, 0] = ambient / (math.pi * _C0)
    if direction is not None and directional:
        d = torch.tensor(direction, dtype=dtype, device=device)
        d = d / d.norm()
        # L(ω) = k·δ(ω - d) projects to L_lm = k·Y_lm(d); its irradiance facing d is Σ Â_l Y_lm(d)².
        y = sh_basis(d[None])[0]
        attenuation = torch.tensor(SH_ATTENUATION, dtype=dtype, device=device)
        k = directional / float((attenuation * y * y).sum())
        coeffs = coeffs + k * y
    return coeffs[:, None, :].expand(batch, 3, SH_BANDS).reshape(batch, 27).clone()


def lighting_design(albedo: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """The linear map from SH lighting to colour: ``albedo_c · Â_k · Y_k(n)`` per point, channel and coefficient,
    so that ``sh_shading(albedo, normals, L)[b, n, c] = Σ_k design[b, n, c, k] · L[b, k, c]``.

    Shape:
        albedo, normals: (B, N, 3) -> (B, N, 3, 9).
    """
    attenuation = torch.tensor(SH_ATTENUATION, dtype=normals.dtype, device=normals.device)
    return albedo[..., None] * (sh_basis(normals) * attenuation)[..., None, :]


def solve_sh_lighting(design: torch.Tensor, colors: torch.Tensor, weights: torch.Tensor,
                      ridge: float = 1e-6) -> torch.Tensor:
    """The SH lighting minimising ``Σ_n w_nc (design_nc · L_c − colors_nc)² + ridge·‖L_c‖²`` for each image and
    colour channel c (weighted ridge least squares over the points; IRLS callers pass their weights).

    The one lighting solver of the package: stage 2's texture fit solves it over UV texels, the
    self-supervised photometric loss over vertices.

    Shape:
        design: (B, N, 3, 9) (:func:`lighting_design`); colors: (B, N, 3); weights: (B, N, 3) or (B, N)
        -> (B, 27) channel-major.
    """
    check_shape(design, ["B", "N", 3, SH_BANDS], "design")
    check_shape(colors, list(design.shape[:3]), "colors")
    if weights.ndim == 2:
        weights = weights[..., None].expand_as(colors)
    weighted = design * weights[..., None]
    normal_matrix = torch.einsum("bnck,bncl->bckl", weighted, design)
    normal_matrix = normal_matrix + ridge * torch.eye(SH_BANDS, dtype=design.dtype, device=design.device)
    rhs = torch.einsum("bnck,bnc->bck", weighted, colors)
    return solve_spd(normal_matrix, rhs[..., None])[0][..., 0].reshape(design.shape[0], 3 * SH_BANDS)


def default_lighting(batch: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The light fits without SH and predictions are shown under (previews, the fit monitor, training
    overlays): soft white ambient plus a light from the upper front. Shape: -> (B, 27)."""
    return ambient_sh_coefficients(batch, ambient=0.75, direction=(0.3, 0.4, 1.0), directional=0.35, dtype=dtype,
                                   device=device)


class SHLighting(nn.Module):
    """SH-lit Lambertian shading with lighting set at construction and overridable per call.

    Args:
        coefficients: default lighting, (B, 27) or (B, 9, 3); may be ``None`` and given per call.

    Shape:
        forward(albedo (B, N, 3), normals (B, N, 3), coefficients=None) -> (B, N, 3).

    Example:
        >>> shade = SHLighting(ambient_sh_coefficients(1))
        >>> rgb = shade(torch.rand(1, 10, 3), torch.nn.functional.normalize(torch.randn(1, 10, 3), dim=-1))
    """

    def __init__(self, coefficients: torch.Tensor | None = None):
        super().__init__()
        self.coefficients = coefficients

    def forward(self, albedo: torch.Tensor, normals: torch.Tensor,
                coefficients: torch.Tensor | None = None) -> torch.Tensor:
        coefficients = self.coefficients if coefficients is None else coefficients
        if coefficients is None:
            raise ValueError("SH coefficients are set neither at construction nor in the call")
        return sh_shading(albedo, normals, coefficients)
