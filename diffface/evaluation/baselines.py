"""Baselines every reconstruction should be compared with: the mean shape and the model's upper bound.

- **Mean shape**: the morphable model's mean, whatever the input (:func:`mean_shape_baseline`). A
  method that does not beat it has learnt nothing about the face.
- **Upper bound**: the model registered to the ground-truth scan *in 3D* (:func:`upper_bound`), the
  best any image-based fit with this model can hope for; the rest of its error is the model's
  inability to represent the face.

Both write one ``NAME.obj`` per ground-truth sample in model space (millimetres), the layout
``diffface evaluate`` scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..alignment import Similarity, procrustes
from ..mesh_io import read_mesh, write_obj
from .protocols import LANDMARK_SUFFIX, MESH_SUFFIXES, landmarks_path_for, read_landmarks_3d
from .closest_point import TriangleMeshIndex

PRIOR_WEIGHT_MM2 = 1.0  # ridge weight λ of Σ(α/σ)² against the squared residuals in mm²
STORED_DECIMALS_MM = 4


def mean_shape_baseline(model, names: list[str], out_dir: str | Path) -> list[Path]:
    """Write the model's mean shape as ``out_dir/NAME.obj`` for every name.

    Example:
        >>> mean_shape_baseline(model, ground_truth_names("S/meshes"), "baselines/meanshape")
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vertices = np.round(model.mean_shape.detach().cpu().double().numpy(), STORED_DECIMALS_MM)
    faces = model.triangles.cpu().numpy()
    return [write_obj(out / f"{name}.obj", vertices, faces) for name in names]


@dataclass(frozen=True)
class UpperBoundFit:
    """The model registered to a scan.

    ``scan ≈ similarity.apply(vertices_model)``; ``residual_mm``: the mean distance of the kept model
    vertices to the scan at the end; ``kept``: how many vertices had a correspondence.

    Shape:
        alpha_id: (K_id,); alpha_exp: (K_exp,); vertices_model, vertices_scan: (V, 3) float64;
        similarity: batch 1.
    """

    alpha_id: np.ndarray
    alpha_exp: np.ndarray
    similarity: Similarity
    vertices_model: np.ndarray
    vertices_scan: np.ndarray
    residual_mm: float
    kept: int


def upper_bound(model, scan_vertices: np.ndarray, scan_faces: np.ndarray | None = None,
                scan_landmarks: np.ndarray | None = None, iterations: int = 12,
                prior_weight: float = PRIOR_WEIGHT_MM2, with_scale: bool = True, fit_expression: bool = True,
                exact_iterations: int = 2, landmark_weight: float = 10.0) -> UpperBoundFit:
    """Register the morphable model to a scan in 3D: shape coefficients and a similarity transform.

    Alternates, ``iterations`` times:

    1. correspondences: each model vertex, moved into the scan's frame, is paired with the nearest
       scan vertex (``cKDTree``); in the last ``exact_iterations`` rounds, when ``scan_faces`` holds
       triangles, with the exact closest point on the scan's surface
       (:mod:`diffface.evaluation.closest_point`). Pairs farther than ``max(4·median, 2 mm)`` are
       dropped (scan holes, cropped borders);
    2. the rotation (Umeyama) mapping the current model shape onto those points;
    3. with that rotation ``R`` fixed, scale ``s``, translation and ``[α_id, α_exp]`` in one linear
       least-squares solve: ``Rᵀy ≈ s·M + A·β + t'`` with ``β = s·α`` (linear in ``s, β, t'``), the
       Gaussian prior as ridge ``λ Σ (α_k / σ_k)²`` (``λ = prior_weight`` mm², small next to
       thousands of residuals). Solving scale and shape together avoids the slow drift of
       alternating between them (the identity modes include size).

    Landmark pairs (model landmark vertex ↔ scan landmark) join every step when given, and set the
    initial similarity; without them the start is the mean shape moved onto the scan's centroid and
    scaled to its spread (no rotation: the scan must roughly face the model's way).

    Args:
        model: a :class:`~diffface.morphable_model.MorphableModel`.
        scan_vertices: the scan's points (millimetres).
        scan_faces: its triangles, or None / empty for a point cloud.
        scan_landmarks: the model's 68 landmarks on the scan (NaN rows: undefined), or None.
        iterations: alternation rounds.
        prior_weight: ``λ`` above.
        with_scale: estimate the scale (False: ``s = 1``, a rigid motion; right when scan and model
            are both in millimetres, as for ``diffface synth`` ground truth).
        fit_expression: also fit ``α_exp`` (False: ``α_exp = 0``, e.g. for neutral MICC scans).
        exact_iterations: final rounds that use exact point-to-surface correspondences.
        landmark_weight: weight of a landmark pair relative to a closest-point pair (closest points
            slide along the surface; landmarks pin where the face's features are).

    Returns:
        :class:`UpperBoundFit`.

    Shape:
        scan_vertices: (N, 3); scan_faces: (F, 3); scan_landmarks: (68, 3).

    Example:
        >>> vertices, faces = read_mesh("S/meshes/face_0000.obj")
        >>> fit = upper_bound(model, vertices, faces, np.load("S/meshes/face_0000_landmarks.npy"))
        >>> fit.vertices_model.shape
        (6561, 3)
    """
    from scipy.spatial import cKDTree


    scan_vertices = np.asarray(scan_vertices, dtype=np.float64)
    if scan_vertices.ndim != 2 or scan_vertices.shape[1] != 3 or len(scan_vertices) < 3:
        raise ValueError(f"scan_vertices must be (N >= 3, 3), got {scan_vertices.shape}")
    if not np.isfinite(scan_vertices).all():
        raise ValueError("scan_vertices contain NaN or infinite values")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    mean = model.mean_shape.detach().cpu().double().numpy()
    bases = [model.id_basis.detach().cpu().double().numpy()]
    stds = [model.id_std.detach().cpu().double().numpy()]
    if fit_expression and model.exp_dims:
        bases.append(model.exp_basis.detach().cpu().double().numpy())
        stds.append(model.exp_std.detach().cpu().double().numpy())
    basis = np.concatenate(bases, 1).reshape(len(mean), 3, -1)  # (V, 3, K)
    num_modes = basis.shape[2]
    std = np.concatenate(stds)
    inverse_variance = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0) ** 2, 1e12)  # σ = 0: mode pinned

    design = np.concatenate([basis.reshape(3 * len(mean), num_modes), np.tile(np.eye(3), (len(mean), 1)),
                             mean.reshape(-1, 1)], 1)  # columns of β, t', s
    gram_all = design.T @ design
    landmark_vertices, landmark_targets = _landmark_pairs(model, scan_landmarks)
    tree = cKDTree(scan_vertices)
    index = TriangleMeshIndex(scan_vertices, np.asarray(scan_faces)) if (
        scan_faces is not None and len(scan_faces) and exact_iterations > 0) else None

    def closest(points: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        if exact and index is not None:
            found = index.query(points)
            return found.points, found.distances
        distances, rows = tree.query(points, workers=-1)
        return scan_vertices[rows], distances

    coefficients = np.zeros(num_modes)
    shape = mean.copy()
    if len(landmark_vertices) >= 3:
        similarity = _procrustes(shape[landmark_vertices], landmark_targets, with_scale)
    else:
        centred_scan, centred_mean = scan_vertices - scan_vertices.mean(0), mean - mean.mean(0)
        spread = np.sqrt((centred_scan ** 2).sum(1).mean() / (centred_mean ** 2).sum(1).mean()) if with_scale else 1.0
        similarity = _similarity(np.eye(3), scan_vertices.mean(0) - spread * mean.mean(0), spread)
    residual, kept = float("nan"), 0
    for iteration in range(iterations):
        exact = iteration >= iterations - exact_iterations
        targets, distances = closest(_apply(similarity, shape), exact)
        keep = distances <= max(4.0 * float(np.median(distances)), 2.0)
        residual, kept = float(distances[keep].mean()), int(keep.sum())
        rows = np.concatenate([np.flatnonzero(keep), landmark_vertices])
        goals = np.concatenate([targets[keep], landmark_targets])
        weights = np.concatenate([np.ones(kept), np.full(len(landmark_vertices), landmark_weight)])
        rotation = _procrustes(shape[rows], goals, with_scale, weights).rotation[0].numpy()
        coefficients, scale, translation = _solve_shape_and_similarity(
            goals @ rotation, rows, design, gram_all, len(mean), prior_weight * inverse_variance,
            float(similarity.scale[0]), with_scale, weights)
        similarity = _similarity(rotation, rotation @ translation, scale)
        shape = mean + basis @ coefficients
    alpha_id = coefficients[:model.id_dims]
    alpha_exp = coefficients[model.id_dims:] if fit_expression and model.exp_dims else np.zeros(model.exp_dims)
    return UpperBoundFit(alpha_id=alpha_id, alpha_exp=alpha_exp, similarity=similarity, vertices_model=shape,
                         vertices_scan=_apply(similarity, shape), residual_mm=residual, kept=kept)


def _solve_shape_and_similarity(goals_rotated: np.ndarray, rows: np.ndarray, design: np.ndarray,
                                gram_all: np.ndarray, num_vertices: int, ridge: np.ndarray, previous_scale: float,
                                with_scale: bool, row_weights: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """``min Σ w ||s·M + A·β + t' - z||² + Σ ridge_k (β_k / s)²`` over ``s, β, t'`` (``s`` = 1 without
    scale); the ridge's ``1/s²`` uses the previous scale, keeping it linear. Returns ``(α = β/s, s, t')``.

    ``design`` (3V, K + 4) holds the columns ``[A, I₃ tiled, M]`` for every vertex and ``gram_all`` its
    Gram matrix: the Gram matrix of the chosen rows is that minus the rows left out plus repeats,
    far cheaper than forming it from scratch each round.

    Shape: goals_rotated (N, 3) = ``Rᵀ y`` for vertices ``rows`` (N,) with weights ``row_weights`` (N,);
    ridge (K,).
    """
    num_modes = len(ridge)
    counts = np.bincount(rows, weights=row_weights, minlength=num_vertices)  # weight of each vertex
    change = np.flatnonzero(counts != 1.0)
    blocks = design.reshape(num_vertices, 3, -1)[change]  # (C, 3, P)
    gram = gram_all + np.einsum("cip,ciq,c->pq", blocks, blocks, counts[change] - 1.0)
    row_design = design.reshape(num_vertices, 3, -1)[rows]  # (N, 3, P)
    rhs = np.einsum("nip,ni,n->p", row_design, goals_rotated, row_weights)
    if not with_scale:  # s = 1: move the mean to the right-hand side, drop its column
        rhs = rhs[:-1] - gram[:-1, -1]
        gram = gram[:-1, :-1]
    scale = previous_scale if with_scale else 1.0
    penalty = np.zeros(len(gram))
    penalty[:num_modes] = ridge / scale ** 2
    solution = np.linalg.solve(gram + np.diag(penalty), rhs)
    if with_scale:
        scale = float(solution[-1])
        if scale <= 0:
            raise ValueError("upper bound: the fitted scale is not positive; give landmarks to initialise")
    return solution[:num_modes] / scale, scale, solution[num_modes:num_modes + 3]


def _similarity(rotation: np.ndarray, translation: np.ndarray, scale: float) -> Similarity:
    return Similarity(rotation=torch.as_tensor(rotation, dtype=torch.float64)[None],
                      translation=torch.as_tensor(translation, dtype=torch.float64)[None],
                      scale=torch.tensor([float(scale)], dtype=torch.float64))


def _landmark_pairs(model, scan_landmarks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(model vertex ids, scan points) of the landmarks defined on both. Shape: -> (L,), (L, 3)."""
    if scan_landmarks is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    scan_landmarks = np.asarray(scan_landmarks, dtype=np.float64)
    indices = model.landmark_indices.cpu().numpy()
    if scan_landmarks.shape != (len(indices), 3):
        raise ValueError(f"scan_landmarks must be ({len(indices)}, 3) (the model's landmarks), got {scan_landmarks.shape}")
    both = (indices >= 0) & np.isfinite(scan_landmarks).all(1)
    return indices[both].astype(np.int64), scan_landmarks[both]


def _procrustes(source: np.ndarray, target: np.ndarray, with_scale: bool,
                weights: np.ndarray | None = None) -> Similarity:
    return procrustes(torch.from_numpy(source)[None], torch.from_numpy(target)[None],
                      None if weights is None else torch.from_numpy(weights)[None], with_scale=with_scale)


def _apply(similarity: Similarity, points: np.ndarray) -> np.ndarray:
    return similarity.apply(torch.from_numpy(points)[None])[0].numpy()


def ground_truth_folder(gt: str | Path) -> Path:
    """``S/meshes`` when given a ``diffface synth`` folder ``S``, else ``gt`` itself."""
    gt = Path(gt)
    if not gt.is_dir():
        raise FileNotFoundError(f"{gt}: ground-truth folder not found")
    return gt / "meshes" if (gt / "meshes").is_dir() and (gt / "manifest.json").is_file() else gt


def ground_truth_names(gt: str | Path) -> list[str]:
    """The sample names of a ground-truth folder: stems of its meshes, ``NAME_landmarks.*`` excluded."""
    folder = ground_truth_folder(gt)
    names = sorted(p.stem for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES
                   and not p.stem.endswith(LANDMARK_SUFFIX))
    if not names:
        raise ValueError(f"{folder}: no ground-truth meshes ({', '.join(MESH_SUFFIXES)}) found")
    return names


def write_upper_bound(model, gt: str | Path, out_dir: str | Path, iterations: int = 12,
                      prior_weight: float = PRIOR_WEIGHT_MM2, with_scale: bool = False) -> dict[str, UpperBoundFit]:
    """:func:`upper_bound` for every ground-truth mesh (``S/meshes/NAME.obj`` + ``NAME_landmarks.npy``),
    written as ``out_dir/NAME.obj`` (millimetres, 0.1 µm, the model's topology) in the ground truth's
    frame: for ``diffface synth`` ground truth that is model space. (The fit's own model-frame
    vertices, ``vertices_model``, differ from it by the fitted rigid motion, which the shape modes
    partly trade against.)

    ``with_scale`` is off by default: ground truth and model are both in millimetres, so a scale
    would only trade against the identity modes' size.

    Returns:
        name -> its :class:`UpperBoundFit`.
    """
    folder = ground_truth_folder(gt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    faces = model.triangles.cpu().numpy()
    fits = {}
    for name in ground_truth_names(folder):
        mesh_path = next(folder / f"{name}{s}" for s in MESH_SUFFIXES if (folder / f"{name}{s}").is_file())
        vertices, scan_faces = read_mesh(mesh_path)
        landmarks_path = landmarks_path_for(mesh_path)
        landmarks = None if landmarks_path is None else read_landmarks_3d(landmarks_path, allow_nan=True)
        if landmarks is not None and len(landmarks) != model.landmark_indices.shape[0]:
            raise ValueError(f"{landmarks_path}: {len(landmarks)} landmarks, the model has "
                             f"{model.landmark_indices.shape[0]}")
        fit = upper_bound(model, vertices, scan_faces, landmarks, iterations, prior_weight, with_scale)
        write_obj(out / f"{name}.obj", np.round(fit.vertices_scan, STORED_DECIMALS_MM), faces)
        fits[name] = fit
    return fits
