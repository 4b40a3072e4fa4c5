"""Rigid / similarity ICP of a reconstruction onto a ground-truth scan surface, and landmark-only alignment.

Each ICP iteration projects the moved reconstruction vertices onto the scan *surface* (the exact
closest point on its triangles, :class:`~diffface.evaluation.closest_point.TriangleMeshIndex`) and
Procrustes-aligns the original reconstruction to those projections (Umeyama, as
:func:`diffface.alignment.procrustes`, in numpy), until the vertices move less than ``tolerance`` ×
the scan's RMS radius. It runs coarse to fine: first on a fixed random subset of ``coarse_points``
vertices, then on ``fine_points`` of them (all of them when the reconstruction has fewer); the
returned alignment then projects every vertex.

Initialisation: Procrustes on landmark correspondences when given; else the centroids and principal
axes of both point sets (the four proper sign choices of the axes, plus the identity rotation for
inputs already in one frame), each refined briefly on a subset against the scan's vertices, the best kept.

Partial overlap: a scan usually covers more (neck, ears, hair) or less than the reconstruction.
Correspondences can be trimmed: ``max_distance`` drops pairs farther apart than that (scan units), and
``trim_fraction`` drops that fraction of the farthest pairs in every iteration. Both default to off,
so every vertex counts, which is right when the two surfaces cover the same region (the d metric is
defined over all vertices). When trimming leaves fewer than 3 pairs, a ``ValueError`` says there is
no overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from ..alignment import Similarity
from .closest_point import TriangleMeshIndex, check_mesh, check_points

__all__ = ["AlignmentResult", "icp", "landmark_alignment", "similarity_to_numpy"]


@dataclass(frozen=True)
class AlignmentResult:
    """A reconstruction aligned to a scan, with its correspondences on the scan surface.

    Attributes:
        similarity: the transform applied to the reconstruction (batch of 1, float64).
        aligned: the moved reconstruction vertices.
        projections: their closest points on the scan surface.
        distances: ``‖aligned − projections‖`` (scan units, mm for diffface meshes).
        triangle_ids: the scan triangle of each projection.
        inliers: the pairs the last Procrustes step used (all ``True`` without trimming).
        iterations: ICP iterations run (0 for landmark alignment).
        converged: whether the tolerance was met before ``max_iterations``.

    Shape:
        aligned, projections: (N, 3); distances, triangle_ids, inliers: (N,).
    """

    similarity: Similarity
    aligned: np.ndarray
    projections: np.ndarray
    distances: np.ndarray
    triangle_ids: np.ndarray
    inliers: np.ndarray
    iterations: int
    converged: bool

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.distances ** 2)))


def similarity_to_numpy(similarity: Similarity) -> tuple[np.ndarray, np.ndarray, float]:
    """``(rotation (3, 3), translation (3,), scale)`` of the first item of a batched :class:`Similarity`."""
    return (similarity.rotation[0].detach().cpu().double().numpy(),
            similarity.translation[0].detach().cpu().double().numpy(), float(similarity.scale[0]))


# A similarity inside this module: (rotation (3, 3), translation (3,), scale), float64 numpy; it becomes a
# torch Similarity only in what is returned.
Transform = tuple[np.ndarray, np.ndarray, float]


def _apply(transform: Transform, points: np.ndarray) -> np.ndarray:
    rotation, translation, scale = transform
    return scale * points @ rotation.T + translation


def _procrustes_np(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None,
                   with_scale: bool) -> Transform:
    """:func:`diffface.alignment.procrustes` (Umeyama) for one float64 point set, in numpy: ICP solves one
    3 × 3 problem per iteration, where torch's per-call overhead and thread pool cost more than the maths.

    Shape:
        source, target: (N, 3); weights: (N,) -> (rotation (3, 3), translation (3,), scale).
    """
    w = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    w = w / max(float(w.sum()), 1e-12)
    mu_s, mu_t = w @ source, w @ target
    s, t = source - mu_s, target - mu_t
    u, sigma, vh = np.linalg.svd((w[:, None] * t).T @ s)
    fix = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vh)) or 1.0])  # no reflection
    rotation = (u * fix) @ vh
    scale = float((sigma * fix).sum() / max(float(w @ (s ** 2).sum(1)), 1e-24)) if with_scale else 1.0
    return rotation, mu_t - scale * rotation @ mu_s, scale


def _make_similarity(transform: Transform) -> Similarity:
    rotation, translation, scale = transform
    return Similarity(rotation=torch.from_numpy(np.asarray(rotation, np.float64))[None],
                      translation=torch.from_numpy(np.asarray(translation, np.float64))[None],
                      scale=torch.tensor([float(scale)], dtype=torch.float64))


def _check_source(points: np.ndarray, name: str) -> np.ndarray:
    """:func:`check_points`, and not empty."""
    points = check_points(points, name)
    if len(points) == 0:
        raise ValueError(f"{name} is empty (no vertices)")
    return points


def _landmark_pairs(source_landmarks, target_landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The landmark pairs finite on both sides (undefined landmarks are NaN); at least 3."""
    src = np.asarray(source_landmarks, dtype=np.float64)
    dst = np.asarray(target_landmarks, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise ValueError(f"landmarks must be two (L, 3) arrays of one shape, got {src.shape} and {dst.shape}")
    keep = np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    if keep.sum() < 3:
        raise ValueError(f"landmark alignment needs at least 3 landmarks defined on both meshes, got {keep.sum()}")
    return src[keep], dst[keep]


def _pca_candidates(source: np.ndarray, target: np.ndarray, with_scale: bool) -> list[Transform]:
    """Centroid + principal-axes initialisations: 4 proper sign choices, plus identity rotation."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    cs, ct = source - mu_s, target - mu_t
    _, axes_s = np.linalg.eigh(cs.T @ cs / len(cs))  # columns, ascending variance
    _, axes_t = np.linalg.eigh(ct.T @ ct / len(ct))
    scale = float(np.sqrt((ct ** 2).sum(1).mean() / max((cs ** 2).sum(1).mean(), 1e-300))) if with_scale else 1.0
    rotations = [np.eye(3)]
    for signs in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        flips = np.diag([signs[0], signs[1], 1.0])
        rotation = axes_t @ flips @ axes_s.T
        if np.linalg.det(rotation) < 0:
            rotation = axes_t @ np.diag([signs[0], signs[1], -1.0]) @ axes_s.T
        rotations.append(rotation)
    return [(r, mu_t - scale * r @ mu_s, scale) for r in rotations]


def _to_vector(transform: Transform, size: float) -> np.ndarray:
    """(rotation vector, translation / size, log scale): comparable units for Anderson mixing."""
    rotation, translation, scale = transform
    return np.concatenate([Rotation.from_matrix(rotation).as_rotvec(), translation / size, [np.log(scale)]])


def _from_vector(x: np.ndarray, size: float) -> Transform:
    return Rotation.from_rotvec(x[:3]).as_matrix(), x[3:6] * size, float(np.exp(x[6]))


def _inliers(distances: np.ndarray, trim_fraction: float, max_distance: float | None) -> np.ndarray:
    """Correspondences kept: within ``max_distance`` and below the ``1 - trim_fraction`` quantile."""
    inliers = np.ones(len(distances), bool)
    if max_distance is not None:
        inliers &= distances <= max_distance
    if trim_fraction > 0:
        inliers &= distances <= np.quantile(distances, 1.0 - trim_fraction)
    return inliers


def _iterate(source: np.ndarray, index: TriangleMeshIndex, transform: Transform, with_scale: bool,
             max_iterations: int, tolerance: float, trim_fraction: float, max_distance: float | None,
             memory: int = 5, vertices_only: bool = False):
    """ICP iterations from ``transform``; returns (transform, aligned, found, inliers, iterations, converged).

    Plain point-to-surface ICP converges linearly and slowly where the surface is flat (the points
    slide along it), so the transform parameters are Anderson-accelerated (AA-ICP, Pavlov et al. 2018):
    an extrapolated transform is kept only if it does not raise the mean squared distance, else the
    plain step is taken and the history cleared. Convergence is judged on the plain step.
    """
    size = index.size
    x = _to_vector(transform, size)
    history_g, history_f = [], []
    plain, previous_energy = None, np.inf
    iterations, converged = 0, False
    while True:
        transform = _from_vector(x, size)
        aligned = _apply(transform, source)
        found = index.nearest_vertices(aligned) if vertices_only else index.query(aligned)
        inliers = _inliers(found.distances, trim_fraction, max_distance)
        if inliers.sum() < 3:
            raise ValueError(
                f"no overlap between the reconstruction and the scan: {int(inliers.sum())} of {len(source)} "
                f"vertices within max_distance={max_distance} of the scan surface (need 3)")
        energy = float(np.mean(found.distances[inliers] ** 2))
        if plain is not None and energy > previous_energy:
            x, plain = plain, None  # the extrapolation did worse: take the plain step instead
            history_g.clear()
            history_f.clear()
            continue
        previous_energy = energy
        if converged or iterations >= max_iterations:
            return transform, aligned, found, inliers, iterations, converged
        weights = None if inliers.all() else inliers.astype(np.float64)
        step = _procrustes_np(source, found.points, weights, with_scale)
        scale = step[2]
        if not (np.isfinite(scale) and scale > 1e-9):
            raise ValueError("ICP collapsed the reconstruction (scale went to 0): the meshes do not overlap")
        iterations += 1
        moved = _apply(step, source)
        converged = np.sqrt(((moved - aligned) ** 2).sum(1).max()) <= tolerance * size
        g = _to_vector(step, size)
        history_g.append(g)
        history_f.append(g - x)
        del history_g[:-memory - 1], history_f[:-memory - 1]
        plain = None
        if converged or len(history_g) < 2:
            x = g
            continue
        delta_g = np.diff(np.array(history_g), axis=0).T  # (7, m)
        delta_f = np.diff(np.array(history_f), axis=0).T
        gamma = np.linalg.lstsq(delta_f, history_f[-1], rcond=None)[0]
        x, plain = g - delta_g @ gamma, g
        if not np.isfinite(x).all():
            x, plain = g, None


def icp(source_vertices: np.ndarray, target_vertices: np.ndarray, target_faces: np.ndarray,
        with_scale: bool = False, init: Similarity | tuple[np.ndarray, np.ndarray] | None = None,
        max_iterations: int = 100, tolerance: float = 1e-5, trim_fraction: float = 0.0,
        max_distance: float | None = None, coarse_points: int = 2000, fine_points: int = 5000, seed: int = 0,
        index: TriangleMeshIndex | None = None) -> AlignmentResult:
    """Align a reconstruction to a scan surface by ICP with exact point-to-surface projections.

    Args:
        source_vertices: the reconstruction's vertices (the points moved).
        target_vertices, target_faces: the scan (a triangle mesh).
        with_scale: also estimate a uniform scale (a similarity instead of a rigid motion).
        init: ``(source_landmarks, target_landmarks)`` (L, 3) each (NaN rows ignored) for a Procrustes
            start, a :class:`~diffface.alignment.Similarity` to start from, or ``None`` for centroid+PCA.
        max_iterations: per phase (coarse, full).
        tolerance: stop when no vertex moves more than ``tolerance`` × the scan's RMS radius.
        trim_fraction: drop this fraction of the farthest pairs in each Procrustes step (0: none).
        max_distance: drop pairs farther apart than this (scan units; ``None``: none).
        coarse_points: vertices of the coarse phase (a fixed random subset; 0: skip the phase).
        fine_points: vertices of the fine phase (a fixed random subset; 0: all vertices). The
            result's correspondences and errors always cover every vertex.
        seed: the subset's random seed.
        index: a prebuilt :class:`TriangleMeshIndex` of the scan (reused across reconstructions).

    Returns:
        :class:`AlignmentResult` with every source vertex aligned and projected.

    Raises:
        ValueError: empty meshes, NaN/inf, fewer than 3 landmarks, or no overlap (see module docstring).

    Shape:
        source_vertices: (N, 3); target_vertices: (V, 3); target_faces: (F, 3).

    Example:
        >>> result = icp(reconstruction, scan_vertices, scan_faces, with_scale=True)
        >>> result.rms, result.iterations
    """
    source = _check_source(source_vertices, "reconstruction vertices")
    if index is None:
        index = TriangleMeshIndex(*check_mesh(target_vertices, target_faces, "scan"))
    if not 0.0 <= trim_fraction < 1.0:
        raise ValueError(f"trim_fraction must be in [0, 1), got {trim_fraction}")
    rng = np.random.default_rng(seed)
    subset = source
    if 0 < coarse_points < len(source):
        subset = source[rng.choice(len(source), coarse_points, replace=False)]
    fine = source
    if 0 < fine_points < len(source):
        fine = source[rng.choice(len(source), fine_points, replace=False)]
    args = (with_scale, max_iterations, tolerance * 10, trim_fraction, max_distance)
    if isinstance(init, Similarity):
        start = similarity_to_numpy(init)
    elif init is not None:
        start = _procrustes_np(*_landmark_pairs(*init), None, with_scale)
    else:
        best = None
        for candidate in _pca_candidates(source, index.vertices, with_scale):
            # a short refinement tells the right axes from the flipped ones
            fit = _iterate(subset[:500], index, candidate, with_scale, 10, tolerance, trim_fraction, max_distance,
                           vertices_only=True)
            rms = float(np.sqrt(np.mean(fit[2].distances[fit[3]] ** 2)))
            if best is None or rms < best[0]:
                best = (rms, fit[0])
        start = best[1]
    iterations = 0
    if subset is not source:
        start, _, _, _, iterations, _ = _iterate(subset, index, start, *args)
    transform, aligned, found, inliers, more, converged = _iterate(
        fine, index, start, with_scale, max_iterations, tolerance, trim_fraction, max_distance)
    if fine is not source:  # every vertex's correspondence under the final alignment
        aligned = _apply(transform, source)
        found = index.query(aligned)
        inliers = _inliers(found.distances, trim_fraction, max_distance)
    return AlignmentResult(similarity=_make_similarity(transform), aligned=aligned, projections=found.points,
                           distances=found.distances, triangle_ids=found.triangle_ids, inliers=inliers,
                           iterations=iterations + more, converged=converged)


def landmark_alignment(source_vertices: np.ndarray, source_landmarks: np.ndarray, target_landmarks: np.ndarray,
                       target_vertices: np.ndarray, target_faces: np.ndarray, with_scale: bool = False,
                       index: TriangleMeshIndex | None = None) -> AlignmentResult:
    """Align by Procrustes on landmark correspondences only, then project onto the scan surface.

    Args:
        source_vertices: the reconstruction's vertices.
        source_landmarks, target_landmarks: corresponding landmarks (NaN rows ignored; at least 3).
        target_vertices, target_faces: the scan.
        with_scale: also estimate a uniform scale.
        index: a prebuilt :class:`TriangleMeshIndex` of the scan.

    Shape:
        source_vertices: (N, 3); source_landmarks, target_landmarks: (L, 3).

    Example:
        >>> result = landmark_alignment(rec, rec[landmark_ids], scan_landmarks, scan_v, scan_f)
    """
    source = _check_source(source_vertices, "reconstruction vertices")
    if index is None:
        index = TriangleMeshIndex(*check_mesh(target_vertices, target_faces, "scan"))
    transform = _procrustes_np(*_landmark_pairs(source_landmarks, target_landmarks), None, with_scale)
    aligned = _apply(transform, source)
    found = index.query(aligned)
    return AlignmentResult(similarity=_make_similarity(transform), aligned=aligned, projections=found.points,
                           distances=found.distances, triangle_ids=found.triangle_ids,
                           inliers=np.ones(len(source), bool), iterations=0, converged=True)
