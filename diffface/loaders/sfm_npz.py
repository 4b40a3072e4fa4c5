"""The Surrey Face Model converted to numpy (``sfm_3448.npz`` in shared data).

Layout (verified against the eos ``.bin`` of the same model, which eos-py reads): ``mean (3V,)``
in millimetres, vertex-major; ``shape_basis (3V, K)`` orthonormal PCA basis;
``shape_eigenvalues (K,)`` PCA variances, so ``std = sqrt``; ``triangles (F, 3)`` 0-based;
``expression_blendshapes (3V, E)`` offsets from the mean with names ``expression_names``;
``texcoords (V, 2)`` with eos' image convention (origin top-left, ``v`` down: eos'
``write_obj`` writes ``1 - v``), flipped here to diffface's ``v`` up. There is no albedo model.

iBUG landmarks come from eos' ``ibug_to_sfm.txt`` and contour outlines from
``sfm_model_contours.json``, looked up beside the ``.npz`` unless given.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..model_format import ModelFormatError, MorphableModelData
from .common import PathLike, expect_array, expect_triangles, finish_model, landmarks_and_outlines, vertex_major

REQUIRED_KEYS = ("mean", "shape_basis", "shape_eigenvalues", "triangles")
SFM_LANDMARK_FILES = ("ibug_to_sfm.txt",)
SFM_CONTOUR_FILES = ("sfm_model_contours.json", "model_contours.json")
BLENDSHAPE_STD = 1.0
"""eos blendshape coefficients are unit weights (0 = neutral, 1 = the full expression), not PCA scores;
diffface gives them a unit prior."""
SFM_LICENSE = "Surrey Face Model: free for non-commercial use only (cvssp.org/facemodel)"


def looks_like_sfm_npz(path: PathLike) -> bool:
    """True if ``path`` is an ``.npz`` holding the Surrey model's arrays."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return all(key in data.files for key in REQUIRED_KEYS)
    except Exception:
        return False


def load_sfm_npz(path: PathLike, landmarks: PathLike | None = None,
                 contours: PathLike | None = None) -> MorphableModelData:
    """Convert the numpy Surrey Face Model.

    Args:
        path: the ``.npz`` (keys in the module docstring; ``expression_blendshapes``,
            ``expression_names`` and ``texcoords`` are optional).
        landmarks: iBUG mapping (eos TOML or 68 0-based indices); default ``ibug_to_sfm.txt``
            beside ``path`` if present. iBUG 61 and 65 (inner mouth corners), undefined in SFM, get
            the outer corners 49 and 55 (recorded in the metadata).
        contours: eos ``model_contours.json``; default ``sfm_model_contours.json`` beside ``path``.
            Used to give the jaw landmarks (undefined in the mapping) frontal default vertices.

    Returns:
        The canonical model: ``exp_std`` 1 per blendshape, ``has_albedo`` False.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such model file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFormatError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ModelFormatError(path, f"not a Surrey Face Model .npz: missing {', '.join(missing)} "
                                     f"(found {', '.join(sorted(arrays)) or 'nothing'})")
    dims: dict[str, int] = {}
    mean = expect_array(path, "mean", arrays["mean"], ["3V"], dims)
    basis = expect_array(path, "shape_basis", arrays["shape_basis"], ["3V", "K"], dims)
    variances = expect_array(path, "shape_eigenvalues", arrays["shape_eigenvalues"], ["K"], dims)
    if (variances < 0).any():
        raise ModelFormatError(path, "'shape_eigenvalues' are PCA variances and must not be negative")
    mean_shape = vertex_major(path, "mean", mean)
    V = mean_shape.shape[0]
    triangles = expect_triangles(path, "triangles", arrays["triangles"], V)
    metadata = {"units": "millimetres (source)", "id_std": "sqrt(shape_eigenvalues)"}
    exp_basis = exp_std = None
    if "expression_blendshapes" in arrays:
        blendshapes = expect_array(path, "expression_blendshapes", arrays["expression_blendshapes"], ["3V", "E"], dims)
        exp_basis = vertex_major(path, "expression_blendshapes", blendshapes)
        exp_std = np.full(exp_basis.shape[2], BLENDSHAPE_STD)
        names = arrays.get("expression_names")
        metadata["expression"] = "eos blendshapes (offsets from the mean), unit prior std"
        if names is not None and len(names) == exp_basis.shape[2]:
            metadata["expression_names"] = [str(n) for n in names]
    uv = None
    if "texcoords" in arrays:
        texcoords = expect_array(path, "texcoords", arrays["texcoords"], [V, 2])
        uv = np.stack([texcoords[:, 0], 1.0 - texcoords[:, 1]], axis=1)
        metadata["uv"] = "eos texcoords with v flipped to point up"
    mapping, outlines, notes = landmarks_and_outlines(path, V, landmarks, contours, SFM_LANDMARK_FILES,
                                                      SFM_CONTOUR_FILES, fill_mouth=True)
    metadata.update(notes)
    return finish_model(
        path, mean_shape=mean_shape, id_basis=vertex_major(path, "shape_basis", basis), id_std=np.sqrt(variances),
        triangles=triangles, exp_basis=exp_basis, exp_std=exp_std, uv=uv, landmarks=mapping, outlines=outlines,
        name=path.stem, source=f"Surrey Face Model (numpy) {path.name}", license=SFM_LICENSE, metadata=metadata)
