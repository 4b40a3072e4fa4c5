"""Batched mesh geometry: face and vertex normals.

All functions take batched vertices ``(B, V, 3)`` and one shared ``faces (F, 3)`` (a morphable
model has one topology).
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_shape


def _check_mesh(vertices: torch.Tensor, faces: torch.Tensor) -> None:
    check_shape(vertices, ["B", "V", 3], "vertices")
    check_shape(faces, ["F", 3], "faces")
    if faces.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"faces must be an integer tensor, got {faces.dtype}")


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, normalize: bool = True,
                 eps: float = 1e-12) -> torch.Tensor:
    """Normals of every triangle, ``(v1 - v0) × (v2 - v0)`` (outward for CCW triangles).

    Args:
        vertices: mesh vertices.
        faces: triangle vertex indices (0-based).
        normalize: return unit normals; otherwise the cross products, whose length is twice
            the triangle's area.
        eps: floor on the norm when normalising.

    Returns:
        Face normals.

    Shape:
        vertices: (B, V, 3); faces: (F, 3) -> (B, F, 3).

    Example:
        >>> v = torch.tensor([[[0., 0, 0], [1, 0, 0], [0, 1, 0]]])
        >>> face_normals(v, torch.tensor([[0, 1, 2]]))
        tensor([[[0., 0., 1.]]])
    """
    _check_mesh(vertices, faces)
    faces = faces.long()
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    normals = torch.cross(v1 - v0, v2 - v0, dim=-1)
    if normalize:
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(eps)
    return normals


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit vertex normals: the area-weighted sum of the adjacent face normals, normalised.

    Args:
        vertices: mesh vertices.
        faces: triangle vertex indices (0-based).
        eps: floor on the norm when normalising (isolated vertices get a zero normal).

    Returns:
        Vertex normals.

    Shape:
        vertices: (B, V, 3); faces: (F, 3) -> (B, V, 3).

    Example:
        >>> v = torch.tensor([[[0., 0, 0], [1, 0, 0], [0, 1, 0]]])
        >>> vertex_normals(v, torch.tensor([[0, 1, 2]]))[0, 0]
        tensor([0., 0., 1.])
    """
    weighted = face_normals(vertices, faces, normalize=False)  # |n| = 2·area: area weighting
    faces = faces.long()
    B, V = vertices.shape[:2]
    summed = torch.zeros(B, V, 3, dtype=vertices.dtype, device=vertices.device)
    for corner in range(3):
        summed = summed.index_add(1, faces[:, corner], weighted)
    return summed / summed.norm(dim=-1, keepdim=True).clamp_min(eps)


class VertexNormals(nn.Module):
    """Module form of :func:`vertex_normals` with the faces set at construction.

    Shape:
        vertices: (B, V, 3) -> (B, V, 3).
    """

    def __init__(self, faces: torch.Tensor):
        super().__init__()
        check_shape(faces, ["F", 3], "faces")
        self.register_buffer("faces", faces.long())

    def forward(self, vertices: torch.Tensor) -> torch.Tensor:
        return vertex_normals(vertices, self.faces)
