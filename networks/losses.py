"""Training losses of the regressor: parameter MSE and the method's 2D+3D vertex loss.

``2D+3D`` (the method's Fig. 4a) compares the shape and the projections the predicted parameters
produce with the ground truth, per vertex:

    L = w_3d · mean_v ‖S(p)_v − S_gt,v‖ + w_2d · mean_v ‖P(p)_v − P_gt,v‖

with ``‖·‖`` the Euclidean (``l2``) or the ``l1`` norm of each vertex's residual, ``S(p)`` the
morphable model's shape (mm) and ``P(p)`` its perspective projection into the crop (pixels). The mean
over vertices (instead of the method's sum) keeps the scale independent of the mesh resolution.
A fixed random subset of vertices (``num_vertices``; the same subset every step, drawn from
``seed``) can stand in for the whole mesh to save time: both terms are then means over that subset.
"""

from __future__ import annotations

import torch
from torch import nn

from diffface.camera import perspective_project
from diffface.checks import check_shape
from diffface.morphable_model import MorphableModel
from diffface.params import ParamLayout

NORMS = ("l1", "l2")


def mse_parameter_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all entries of (normalised) parameter vectors.

    Shape:
        predicted, target: (B, N) -> scalar.

    Example:
        >>> mse_parameter_loss(torch.zeros(2, 3), torch.ones(2, 3))
        tensor(1.)
    """
    check_shape(predicted, ["B", "N"], "predicted")
    check_shape(target, list(predicted.shape), "target")
    return ((predicted - target) ** 2).mean()


class MSEParameterLoss(nn.Module):
    """:func:`mse_parameter_loss` as a module. Shape: (B, N), (B, N) -> scalar."""

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mse_parameter_loss(predicted, target)


def per_vertex_distance(residual: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    """Each vertex's residual length: Euclidean (``l2``) or sum of absolute values (``l1``).

    The ``l2`` length of an exactly zero residual has gradient 0 (not NaN).

    Shape:
        residual: (B, V, D) -> (B, V).
    """
    if norm == "l1":
        return residual.abs().sum(-1)
    if norm == "l2":
        squared = (residual ** 2).sum(-1)
        zero = squared == 0
        return torch.where(zero, torch.zeros_like(squared), torch.where(zero, torch.ones_like(squared), squared).sqrt())
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def vertex_projection_loss(vertices: torch.Tensor, projections: torch.Tensor, vertices_gt: torch.Tensor,
                           projections_gt: torch.Tensor, norm: str = "l2", weight_3d: float = 1.0,
                           weight_2d: float = 1.0) -> dict[str, torch.Tensor]:
    """The 2D+3D loss from predicted and ground-truth vertices and projections.

    Args:
        vertices, vertices_gt: shapes in model space (mm).
        projections, projections_gt: their projections into the image (pixels).
        norm: ``"l2"`` or ``"l1"`` per vertex.
        weight_3d, weight_2d: weights of the two terms.

    Returns:
        ``{"loss_3d": mean per-vertex 3D distance (mm), "loss_2d": mean per-vertex 2D distance (px),
        "total": weight_3d · loss_3d + weight_2d · loss_2d}``.

    Shape:
        vertices, vertices_gt: (B, V, 3); projections, projections_gt: (B, V, 2) -> scalars.

    Example:
        >>> terms = vertex_projection_loss(S, P, S_gt, P_gt, norm="l1")
        >>> terms["total"].backward()
    """
    check_shape(vertices, ["B", "V", 3], "vertices")
    batch, count = vertices.shape[:2]
    check_shape(vertices_gt, [batch, count, 3], "vertices_gt")
    check_shape(projections, [batch, count, 2], "projections")
    check_shape(projections_gt, [batch, count, 2], "projections_gt")
    loss_3d = per_vertex_distance(vertices - vertices_gt, norm).mean()
    loss_2d = per_vertex_distance(projections - projections_gt, norm).mean()
    return {"loss_3d": loss_3d, "loss_2d": loss_2d, "total": weight_3d * loss_3d + weight_2d * loss_2d}


def shape_and_projections(model: MorphableModel, layout: ParamLayout, params: torch.Tensor,
                          vertex_indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``S(p)`` (mm) and ``P(p)`` (pixels) of unnormalised parameter vectors, optionally at a vertex subset.

    Shape:
        params: (B, P); vertex_indices: (K,) or None -> (B, K or V, 3), (B, K or V, 2).
    """
    groups = layout.unpack(params)
    vertices = model.shape(groups.alpha_id, groups.alpha_exp)
    if vertex_indices is not None:
        vertices = vertices[:, vertex_indices]
    projections, _ = perspective_project(vertices, groups.angles, groups.translation, groups.focal,
                                         groups.principal_point)
    return vertices, projections


def vertex_subset(num_model_vertices: int, num_vertices: int, seed: int = 0) -> torch.Tensor | None:
    """A fixed random subset of ``num_vertices`` vertex indices (sorted); None for all (``num_vertices`` 0
    or at least the model's count)."""
    if num_vertices <= 0 or num_vertices >= num_model_vertices:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_model_vertices, generator=generator)[:num_vertices].sort().values


class VertexProjectionLoss(nn.Module):
    """The 2D+3D loss through a morphable model and the camera, from *unnormalised* parameters.

    Args:
        model: the morphable model of the parameters.
        norm: ``"l2"`` or ``"l1"`` per vertex.
        weight_3d, weight_2d: term weights.
        num_vertices: compare a fixed random subset of this many vertices (0: all).
        seed: seed of the subset.

    Shape:
        forward(params (B, P), vertices_gt (B, V, 3), projections_gt (B, V, 2)) -> dict of scalars
        (see :func:`vertex_projection_loss`); ground truth over all V model vertices.

    Example:
        >>> loss = VertexProjectionLoss(model, norm="l2", num_vertices=1000)
        >>> loss(params, batch["vertices"], batch["projections"])["total"]
    """

    def __init__(self, model: MorphableModel, norm: str = "l2", weight_3d: float = 1.0, weight_2d: float = 1.0,
                 num_vertices: int = 0, seed: int = 0):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.model = model
        self.layout = model.layout
        self.norm, self.weight_3d, self.weight_2d = norm, weight_3d, weight_2d
        subset = vertex_subset(model.num_vertices, num_vertices, seed)
        self.register_buffer("vertex_indices", subset if subset is not None else torch.empty(0, dtype=torch.long),
                             persistent=False)

    def forward(self, params: torch.Tensor, vertices_gt: torch.Tensor,
                projections_gt: torch.Tensor) -> dict[str, torch.Tensor]:
        indices = self.vertex_indices if self.vertex_indices.numel() else None
        vertices, projections = shape_and_projections(self.model, self.layout, params, indices)
        if indices is not None:
            vertices_gt, projections_gt = vertices_gt[:, indices], projections_gt[:, indices]
        return vertex_projection_loss(vertices, projections, vertices_gt, projections_gt, self.norm,
                                      self.weight_3d, self.weight_2d)
