"""The model's UV frame: a fixed-size UV image onto which per-vertex values are mapped, so that
images of different resolutions compare alike in the texture term.

The map from vertices to texels is linear and fixed by the model's UV layout: each texel lies in
one UV triangle and takes the barycentric blend of that triangle's three vertex values. It is
computed once by rasterising the UV mesh.
"""

from __future__ import annotations

import torch
from torch import nn

from diffface.checks import check_shape

from .rasterize import rasterize_meshes


def uv_texel_map(uv: torch.Tensor, faces: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each texel of a ``size × size`` UV image: its triangle's vertices and barycentric weights.

    Texel ``(row, col)`` has its centre at ``u = col / (size − 1)``, ``v = 1 − row / (size − 1)``
    (row 0 is the top, ``v = 1``).

    Returns:
        ``(texel_vertices, texel_weights, texel_mask)``.

    Shape:
        uv: (V, 2) in [0, 1]; faces: (F, 3) -> (S, S, 3) long, (S, S, 3), (S, S) bool.
    """
    check_shape(uv, ["V", 2], "uv")
    check_shape(faces, ["F", 3], "faces")
    screen = torch.stack([uv[:, 0] * (size - 1), (1 - uv[:, 1]) * (size - 1), torch.ones_like(uv[:, 0])], -1)
    fragments = rasterize_meshes(screen[None].double(), faces.long(), (size, size))
    face = fragments.pix_to_face[0].clamp_min(0)
    vertices = faces.long()[face]
    weights = fragments.bary_coords[0].to(uv.dtype)
    mask = fragments.mask[0]
    return vertices * mask[..., None], weights * mask[..., None], mask


def vertices_to_uv_image(values: torch.Tensor, texel_vertices: torch.Tensor, texel_weights: torch.Tensor) -> torch.Tensor:
    """Map per-vertex values into the UV image (zero outside the layout).

    Shape:
        values: (B, V, C); texel_vertices: (S, S, 3); texel_weights: (S, S, 3) -> (B, C, S, S).
    """
    check_shape(values, ["B", "V", "C"], "values")
    B, V, C = values.shape
    S = texel_vertices.shape[0]
    # vertex-major (V, B·C) rows: one gather of whole contiguous rows, forward and backward
    rows = values.transpose(0, 1).reshape(V, B * C)
    gathered = rows.index_select(0, texel_vertices.reshape(-1)).view(S * S, 3, B * C)
    image = (gathered * texel_weights.reshape(S * S, 3, 1).to(values.dtype)).sum(1)  # (S·S, B·C)
    return image.view(S, S, B, C).permute(2, 3, 0, 1)


class UVFrame(nn.Module):
    """Module holding the texel map of a model's UV layout.

    Args:
        uv: (V, 2) UV coordinates in [0, 1]; faces: (F, 3); size: UV image side (texels).

    Shape:
        forward(values (B, V, C)) -> (B, C, S, S); ``mask``: (S, S) bool texels inside the layout.
    """

    def __init__(self, uv: torch.Tensor, faces: torch.Tensor, size: int = 128):
        super().__init__()
        texel_vertices, texel_weights, mask = uv_texel_map(uv.float(), faces, size)
        self.size = size
        self.register_buffer("texel_vertices", texel_vertices)
        self.register_buffer("texel_weights", texel_weights.float())
        self.register_buffer("mask", mask)

    @classmethod
    def from_texel_map(cls, texel_vertices: torch.Tensor, texel_weights: torch.Tensor, mask: torch.Tensor) -> "UVFrame":
        """A frame from a texel map already computed (e.g. :func:`uv_texel_map`'s, with the vertices
        renumbered for a subset of the mesh), without rasterising again.

        Shape:
            texel_vertices: (S, S, 3) long; texel_weights: (S, S, 3); mask: (S, S) bool.
        """
        check_shape(texel_vertices, ["S", "S", 3], "texel_vertices")
        check_shape(texel_weights, list(texel_vertices.shape), "texel_weights")
        check_shape(mask, list(texel_vertices.shape[:2]), "mask")
        frame = cls.__new__(cls)
        nn.Module.__init__(frame)
        frame.size = texel_vertices.shape[0]
        frame.register_buffer("texel_vertices", texel_vertices.long())
        frame.register_buffer("texel_weights", texel_weights.float())
        frame.register_buffer("mask", mask.bool())
        return frame

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return vertices_to_uv_image(values, self.texel_vertices, self.texel_weights)
