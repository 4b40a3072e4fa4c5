"""Evaluating reconstructions against ground-truth scans: closest points, ICP, metrics, CED plots, reports."""

from .closest_point import (ClosestPoints, TriangleMeshIndex, closest_points_brute_force, closest_points_on_mesh,
                            closest_points_on_triangles)
from .evaluate import evaluate_methods, list_meshes, mesh_key, read_landmark_indices, summarise
from .icp import AlignmentResult, icp, landmark_alignment
from .metrics import NormalizedDistance, auc, ced_curve, error_mm_stats, normalized_distance_d
from .plots import plot_ced

__all__ = [
    "ClosestPoints", "TriangleMeshIndex", "closest_points_brute_force", "closest_points_on_mesh",
    "closest_points_on_triangles", "AlignmentResult", "icp", "landmark_alignment", "NormalizedDistance", "auc",
    "ced_curve", "error_mm_stats", "normalized_distance_d", "plot_ced", "evaluate_methods", "list_meshes",
    "mesh_key", "read_landmark_indices", "summarise",
]
