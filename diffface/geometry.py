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


def cross_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a × b`` over the last dimension, written out: forward and backward take about half the time of
    ``torch.linalg.cross`` on the CPU for mesh-sized batches.

    Shape:
        a, b: (..., 3) -> (..., 3).

    Example:
        >>> cross_product(torch.tensor([1., 0, 0]), torch.tensor([0., 1, 0]))
        tensor([0., 0., 1.])
    """
    a0, a1, a2 = a.unbind(-1)
    b0, b1, b2 = b.unbind(-1)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], -1)


def rotate_points(points: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``R · X`` for every point: ``points @ Rᵀ`` computed as ``(R @ pointsᵀ)ᵀ``, whose inner
    matrix product runs over the long point axis (several times faster on the CPU than a batched
    product with an inner dimension of 3). Returns a transposed view.

    Shape:
        points: (B, N, 3); rotation: (B, 3, 3) -> (B, N, 3).

    Example:
        >>> rotate_points(torch.tensor([[[1., 0, 0]]]), torch.tensor([[[0., -1, 0], [1, 0, 0], [0, 0, 1]]]))
        tensor([[[0., 1., 0.]]])
    """
    return (rotation @ points.transpose(-1, -2)).transpose(-1, -2)


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
    v0, v1, v2 = (vertices.index_select(1, faces[:, i]) for i in range(3))
    normals = cross_product(v1 - v0, v2 - v0)
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
    summed = vertex_normal_sums(vertices, faces)
    return summed / summed.norm(dim=-1, keepdim=True).clamp_min(eps)


def vertex_normal_sums(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """The unnormalised vertex normals :func:`vertex_normals` normalises: per vertex the sum of its triangles'
    ``(v1 − v0) × (v2 − v0)`` (twice their areas times their unit normals).

    Shape:
        vertices: (B, V, 3); faces: (F, 3) -> (B, V, 3).
    """
    _check_mesh(vertices, faces)
    faces = faces.long()
    B, V = vertices.shape[:2]
    # vertex-major (V, B·3) rows: the gathers, the scatter-adds and their backward passes then move
    # whole contiguous rows (about 1.4x faster forward and backward than gathering along dim 1)
    rows = vertices.transpose(0, 1).reshape(V, B * 3)
    v0, v1, v2 = (rows.index_select(0, faces[:, i]).view(-1, B, 3) for i in range(3))
    weighted = cross_product(v1 - v0, v2 - v0).view(-1, B * 3)  # |n| = 2·area: area weighting
    summed = torch.zeros(V, B * 3, dtype=vertices.dtype, device=vertices.device)
    for corner in range(3):
        summed = summed.index_add(0, faces[:, corner], weighted)
    return summed.view(V, B, 3).transpose(0, 1)


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
