"""Shaders: turn rasterizer :class:`~diffface.renderers.fragments.Fragments` into images.

Each shader is an ``nn.Module`` whose ``forward(fragments, mesh)`` takes the fragments and a
:class:`ShadingInput` (the per-vertex data of the batch). Lighting and background are set at
construction and overridable per call, like PyTorch3D's shaders.

Lighting frame: SH lighting acts on normals in the *rotated model frame* (the model's axes after
the head rotation ``R``: +x image right, +y up, +z toward the camera), so a light stays fixed
relative to the camera while the head turns (as in Deep3DFaceRecon).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffface.checks import check_shape
from diffface.lighting import sh_shading

from .fragments import Fragments
from .rasterize import interpolate_attributes


@dataclass(frozen=True)
class ShadingInput:
    """Per-vertex data a shader may need.

    Shape:
        faces: (F, 3) long; normals: (B, V, 3) unit normals in the lighting frame;
        albedo: (B, V, 3) or None; sh: (B, 27) / (B, 9, 3) or None;
        depth: (B, V) camera depth or None; attributes: (B, V, C) or None (for AttributeShader).
    """

    faces: torch.Tensor
    normals: torch.Tensor
    albedo: torch.Tensor | None = None
    sh: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    attributes: torch.Tensor | None = None


def _composite(values: torch.Tensor, fragments: Fragments, background: torch.Tensor | float) -> torch.Tensor:
    """Put ``background`` where no face is visible. Shape: (B, H, W, C) -> (B, H, W, C)."""
    bg = torch.as_tensor(background, dtype=values.dtype, device=values.device)
    return torch.where(fragments.mask[..., None], values, bg.expand_as(values))


def shade_sh(fragments: Fragments, mesh: ShadingInput, sh: torch.Tensor | None = None, per_pixel: bool = False,
             background: torch.Tensor | float = 0.0) -> torch.Tensor:
    """SH-lit Lambertian albedo, the method's image formation.

    ``per_pixel=False`` shades each vertex (as the method does) and interpolates the colours
    (Gouraud); ``per_pixel=True`` interpolates albedo and normals, renormalises the normals and
    shades each pixel (Phong-style normals, sharper highlights).

    Shape:
        -> (B, H, W, 3).
    """
    sh = mesh.sh if sh is None else sh
    if mesh.albedo is None or sh is None:
        raise ValueError("SH shading needs albedo and SH lighting (ShadingInput.albedo and .sh, or sh=...)")
    if per_pixel:
        both = interpolate_attributes(fragments, mesh.faces, torch.cat([mesh.albedo, mesh.normals], -1))
        B, H, W, _ = both.shape
        normals = both[..., 3:]
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        colour = sh_shading(both[..., :3].reshape(B, H * W, 3), normals.reshape(B, H * W, 3), sh).reshape(B, H, W, 3)
    else:
        colour = interpolate_attributes(fragments, mesh.faces, sh_shading(mesh.albedo, mesh.normals, sh))
    return _composite(colour, fragments, background)


class SHShader(nn.Module):
    """Module form of :func:`shade_sh`.

    Args:
        sh: default lighting (B, 27) or (B, 9, 3); overridable per call.
        per_pixel: shade per pixel instead of per vertex.
        background: RGB or scalar for uncovered pixels.

    Shape:
        forward(fragments, mesh, sh=None) -> (B, H, W, 3).
    """

    def __init__(self, sh: torch.Tensor | None = None, per_pixel: bool = False,
                 background: tuple[float, float, float] | float = 0.0):
        super().__init__()
        self.sh, self.per_pixel, self.background = sh, per_pixel, background

    def forward(self, fragments: Fragments, mesh: ShadingInput, sh: torch.Tensor | None = None) -> torch.Tensor:
        chosen = sh if sh is not None else (mesh.sh if mesh.sh is not None else self.sh)
        return shade_sh(fragments, mesh, chosen, self.per_pixel, self.background)


class NormalShader(nn.Module):
    """Interpolated unit normals (lighting frame); ``as_colour`` maps them to ``(n + 1) / 2``.

    Shape:
        forward(fragments, mesh) -> (B, H, W, 3).
    """

    def __init__(self, as_colour: bool = False, background: float = 0.0):
        super().__init__()
        self.as_colour, self.background = as_colour, background

    def forward(self, fragments: Fragments, mesh: ShadingInput) -> torch.Tensor:
        normals = interpolate_attributes(fragments, mesh.faces, mesh.normals)
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        if self.as_colour:
            normals = (normals + 1) / 2
        return _composite(normals, fragments, self.background)


class DepthShader(nn.Module):
    """Camera depth of the visible surface (background ``background``).

    Shape:
        forward(fragments, mesh) -> (B, H, W, 1).
    """

    def __init__(self, background: float = 0.0):
        super().__init__()
        self.background = background

    def forward(self, fragments: Fragments, mesh: ShadingInput | None = None) -> torch.Tensor:
        return _composite(fragments.zbuf[..., None], fragments, self.background)


class SilhouetteShader(nn.Module):
    """1 where the mesh covers a pixel, 0 elsewhere (hard coverage: no gradient to vertices).

    Shape:
        forward(fragments, mesh) -> (B, H, W, 1).
    """

    def forward(self, fragments: Fragments, mesh: ShadingInput | None = None) -> torch.Tensor:
        return fragments.mask[..., None].to(fragments.bary_coords.dtype)


class AttributeShader(nn.Module):
    """Interpolates any per-vertex attributes (UV coordinates, labels, positions).

    Shape:
        forward(fragments, mesh) with mesh.attributes (B, V, C) -> (B, H, W, C).
    """

    def __init__(self, background: float = 0.0):
        super().__init__()
        self.background = background

    def forward(self, fragments: Fragments, mesh: ShadingInput) -> torch.Tensor:
        if mesh.attributes is None:
            raise ValueError("AttributeShader needs ShadingInput.attributes (B, V, C)")
        check_shape(mesh.attributes, [fragments.pix_to_face.shape[0], mesh.normals.shape[1], "C"], "attributes")
        return _composite(interpolate_attributes(fragments, mesh.faces, mesh.attributes), fragments, self.background)
