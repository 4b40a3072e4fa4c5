"""The FaceWarehouse-derived expression basis (Guo et al.) as Deep3DFaceRecon ships it: ``Exp_Pca.bin``.

Layout, as read by ``LoadExpBasis`` in sicxu/Deep3DFaceRecon_pytorch ``util/load_mats.py`` (and
microsoft/Deep3DFaceReconstruction ``load_data.py``), little-endian:

* ``int32 exp_dim`` (79 in the released file);
* ``float32 expMU[3 * V]``, vertex-major (``V = 53215``: the BFM 2009 mesh without the 275
  vertices of its inner mouth/neck that Guo et al. dropped);
* ``float32 expPC[exp_dim * 3 * V]``, mode-major: ``reshape(exp_dim, 3V).T`` gives ``(3V, exp_dim)``.

The per-mode standard deviations are not in the file: they are ``std_exp.txt`` (``exp_dim`` numbers)
beside it, and Deep3DFaceRecon uses ``expPC * std_exp`` as its basis with unit coefficients, divided
by 1e5 like the BFM 2009 shape, i.e. the basis is in BFM 2009's micrometres. Deep3DFaceRecon ignores
``expMU``. Mapping to BFM 2009's 53490 vertices needs ``BFM_exp_idx.mat`` (``trimIndex``: for each
of the 53215 expression vertices its 1-based BFM vertex), which ships only with Deep3DFaceRecon.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.io

from ..contours import build_contour_lines
from ..model_format import ModelFormatError, MorphableModelData
from .common import PathLike, expect_array

MICROMETRES_TO_MM = 1e-3
DEEP3D_NUM_VERTICES = 53215
BFM2009_NUM_VERTICES = 53490
STD_FILE = "std_exp.txt"
INDEX_FILE = "BFM_exp_idx.mat"
INDEX_KEY = "trimIndex"


@dataclass(frozen=True)
class ExpressionBasis:
    """An expression model in canonical units.

    Attributes:
        mean_offset: ``expMU`` in millimetres (V, 3).
        basis: ``expPC`` (V, 3, K); with ``std`` it gives ``offset = basis · α``, ``α_k ~ N(0, std_k²)``, in mm.
        std: per-mode standard deviation (K,), millimetres.
        source: file names, for metadata.
    """

    mean_offset: np.ndarray
    basis: np.ndarray
    std: np.ndarray
    source: str

    @property
    def num_vertices(self) -> int:
        return int(self.basis.shape[0])


def read_exp_pca_bin(path: PathLike, std: PathLike | None = None,
                     scale_to_mm: float = MICROMETRES_TO_MM) -> ExpressionBasis:
    """Read ``Exp_Pca.bin`` and its ``std_exp.txt``.

    The vertex count is taken from the file size (``4 + 4·3V·(1 + exp_dim)`` bytes), so files for
    other meshes of the same layout read too.

    Args:
        path: the ``Exp_Pca.bin``.
        std: the standard deviations file; default ``std_exp.txt`` beside ``path`` (required: without
            it the basis' scale is unknown).
        scale_to_mm: the file's length unit in millimetres (BFM 2009 micrometres).

    Returns:
        The expression basis; ``offset = basis · α`` with ``α ~ N(0, std²)`` reproduces
        Deep3DFaceRecon's ``(expPC * std_exp) · c``, ``c ~ N(0, 1)``, in millimetres.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such expression basis file")
    raw = path.read_bytes()
    if len(raw) < 4:
        raise ModelFormatError(path, f"only {len(raw)} bytes: not an Exp_Pca.bin (int32 exp_dim, float32 expMU, expPC)")
    exp_dim = int(np.frombuffer(raw, dtype="<i4", count=1)[0])
    floats_per_vertex = 3 * (1 + exp_dim)
    payload = (len(raw) - 4) // 4
    if exp_dim <= 0 or (len(raw) - 4) % 4 or payload % floats_per_vertex or payload == 0:
        raise ModelFormatError(path, f"size {len(raw)} bytes does not fit the Exp_Pca.bin layout for exp_dim = "
                                     f"{exp_dim} (4 + 4 * 3V * (1 + exp_dim) bytes); truncated or not this format")
    V = payload // floats_per_vertex
    values = np.frombuffer(raw, dtype="<f4", offset=4)
    mean = expect_array(path, "expMU", values[:3 * V], [3 * V])
    basis = expect_array(path, "expPC", values[3 * V:].reshape(exp_dim, 3 * V).T, [3 * V, exp_dim])
    std_path = Path(std) if std is not None else path.parent / STD_FILE
    if not std_path.is_file():
        raise ModelFormatError(path, f"needs its per-mode standard deviations: {std_path} not found. Pass "
                                     f"expression_std=PATH (Deep3DFaceRecon ships it as BFM/{STD_FILE})")
    try:
        std_values = np.loadtxt(std_path, dtype=np.float64, ndmin=1).reshape(-1)
    except ValueError as exc:
        raise ModelFormatError(std_path, f"not a list of numbers ({exc})") from exc
    std_values = expect_array(std_path, "std_exp", std_values, [exp_dim])
    if (std_values < 0).any():
        raise ModelFormatError(std_path, "standard deviations must not be negative")
    return ExpressionBasis(mean_offset=mean.reshape(V, 3).astype(np.float64) * scale_to_mm,
                           basis=basis.reshape(V, 3, exp_dim).astype(np.float64),
                           std=std_values * scale_to_mm, source=f"{path.name} + {std_path.name}")


def read_vertex_index(path: PathLike) -> np.ndarray:
    """Read the expression-to-shape vertex map: ``BFM_exp_idx.mat`` (``trimIndex``, 1-based) or a
    ``.npy``/text file of 0-based indices.

    Returns:
        For every expression vertex, its 0-based shape-model vertex. Shape: (V_exp,) int64.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such vertex index file")
    try:
        if path.suffix == ".mat":
            table = scipy.io.loadmat(str(path))
            if INDEX_KEY not in table:
                found = ", ".join(k for k in table if not k.startswith("__"))
                raise ModelFormatError(path, f"has no '{INDEX_KEY}' (keys: {found})")
            index = np.asarray(table[INDEX_KEY]).reshape(-1) - 1
        elif path.suffix == ".npy":
            index = np.load(path, allow_pickle=False).reshape(-1)
        else:
            index = np.loadtxt(path, ndmin=1).reshape(-1)
    except ModelFormatError:
        raise
    except Exception as exc:
        raise ModelFormatError(path, f"not a readable vertex index file ({type(exc).__name__}: {exc})") from exc
    if index.size == 0 or not np.all(index == np.round(index)) or index.min() < 0:
        raise ModelFormatError(path, "vertex indices must be non-negative integers (trimIndex is 1-based)")
    return index.astype(np.int64)


def add_expression(model: MorphableModelData, expression: ExpressionBasis, vertex_index: np.ndarray | None = None,
                   include_mean: bool = False, path: PathLike | None = None) -> MorphableModelData:
    """Give a shape model (e.g. BFM 2009) an expression basis, cropping it to the expression's vertices.

    Args:
        model: the canonical shape model.
        expression: the expression basis.
        vertex_index: for every expression vertex its model vertex (``read_vertex_index``); required
            when the vertex counts differ (BFM 2009: 53490 vs 53215).
        include_mean: add ``expMU`` to the mean shape (Deep3DFaceRecon does not).
        path: the expression file, named in errors.

    Returns:
        The model on the expression's vertices (triangles touching a dropped vertex are dropped,
        landmarks on one become ``-1``) with ``exp_basis``/``exp_std`` set.
    """
    V, V_exp = model.num_vertices, expression.num_vertices
    if vertex_index is None:
        if V_exp != V:
            hint = (f" For BFM 2009 ({BFM2009_NUM_VERTICES}) and Deep3DFaceRecon's basis ({DEEP3D_NUM_VERTICES}) "
                    f"that is {INDEX_FILE} ('{INDEX_KEY}'), which ships only with Deep3DFaceRecon (its BFM folder)."
                    if (V, V_exp) == (BFM2009_NUM_VERTICES, DEEP3D_NUM_VERTICES) else "")
            raise ModelFormatError(path, f"expression basis has {V_exp} vertices but the shape model has {V}; pass "
                                         "expression_index=PATH mapping each expression vertex to a model vertex."
                                         + hint)
        vertex_index = np.arange(V)
    vertex_index = np.asarray(vertex_index, dtype=np.int64)
    if vertex_index.shape != (V_exp,) or vertex_index.max(initial=-1) >= V or len(np.unique(vertex_index)) != V_exp:
        low, high = vertex_index.min(initial=0), vertex_index.max(initial=0)
        raise ModelFormatError(path, f"vertex index must list {V_exp} distinct model vertices in [0, {V}), got "
                                     f"{vertex_index.size} in [{low}, {high}]")
    new_of_old = np.full(V, -1, dtype=np.int64)
    new_of_old[vertex_index] = np.arange(V_exp)
    triangles = new_of_old[model.triangles]
    triangles = triangles[(triangles >= 0).all(axis=1)]
    if triangles.shape[0] == 0:
        raise ModelFormatError(path, "no triangle of the shape model survives cropping to the expression's vertices")
    landmarks = np.where(model.landmark_indices >= 0, new_of_old[np.maximum(model.landmark_indices, 0)], -1)
    mean_shape = model.mean_shape[vertex_index] + (expression.mean_offset if include_mean else 0.0)
    marching = [int(n) for n in model.contour_landmarks if landmarks[n] >= 0]
    lines = build_contour_lines(mean_shape, landmarks, marching) if marching else np.zeros((0, 0), np.int64)
    metadata = {**model.metadata, "expression": f"{expression.source} (Deep3DFaceRecon layout), std from std_exp",
                "expression_mean_included": include_mean, "cropped_to_expression_vertices": V_exp != V}
    cropped = replace(
        model, mean_shape=mean_shape, id_basis=model.id_basis[vertex_index], exp_basis=expression.basis,
        exp_std=expression.std, albedo_mean=model.albedo_mean[vertex_index],
        albedo_basis=model.albedo_basis[vertex_index], triangles=triangles, uv=model.uv[vertex_index],
        landmark_indices=landmarks, contour_landmarks=np.asarray(marching, dtype=np.int64), contour_lines=lines,
        metadata=metadata)
    return cropped.canonical().validate(path)
