"""The Basel Face Model 2017/2019 (``model2017-1_bfm_nomouth.h5`` etc., statismo HDF5, read with h5py).

Layout and conventions, as used by eos ``share/scripts/convert-bfm2017-to-eos.py``:

* ``shape/model/mean (3V,)`` vertex-major, in millimetres (a factor 1000 below BFM 2009: readers that
  bring both to Deep3DFaceRecon's decimetres divide BFM 2017 by 1e2 and BFM 2009 by 1e5);
* ``shape/model/pcaBasis (3V, K)`` orthonormal columns; ``shape/model/pcaVariance (K,)`` variances,
  so ``std = sqrt``;
* ``shape/representer/cells (3, F)`` 0-based triangles (transposed), ``points (3, V)``;
* ``color/model/{mean, pcaBasis, pcaVariance}`` colours in [0, 1] (eos does not rescale them);
* ``expression/model/{mean, pcaBasis, pcaVariance}``: a model of deformations whose mean is added to
  the shape mean (eos adds an expression PCA model's mean in ``MorphableModel::get_mean``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_format import ModelFormatError, MorphableModelData
from .common import PathLike, expect_array, expect_triangles, finish_model, landmarks_and_outlines, vertex_major

INSTALL_HINT = "reading BFM 2017 .h5 models needs h5py: `pip install h5py` (or `pip install diffface[formats]`)"
BFM_LICENSE = "Basel Face Model 2017: non-commercial research use under the University of Basel licence"


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return h5py


def _read(path: Path, h5, name: str) -> np.ndarray:
    if name not in h5:
        raise ModelFormatError(path, f"not a Basel Face Model 2017 .h5: no dataset '{name}'")
    try:
        return np.asarray(h5[name][()])
    except Exception as exc:
        raise ModelFormatError(path, f"cannot read '{name}' ({type(exc).__name__}: {exc})") from exc


def _pca(path: Path, h5, group: str, dims: dict, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean (V, 3), basis (V, 3, K), std (K,))`` of a statismo PCA group, lengths scaled by ``scale``."""
    mean = expect_array(path, f"{group}/mean", _read(path, h5, f"{group}/mean"), ["3V"], dims)
    basis = expect_array(path, f"{group}/pcaBasis", _read(path, h5, f"{group}/pcaBasis"), ["3V", None], dims)
    variance = expect_array(path, f"{group}/pcaVariance", _read(path, h5, f"{group}/pcaVariance"), [basis.shape[1]])
    if (variance < 0).any():
        raise ModelFormatError(path, f"'{group}/pcaVariance' are variances and must not be negative")
    return (vertex_major(path, f"{group}/mean", mean.astype(np.float64)) * scale,
            vertex_major(path, f"{group}/pcaBasis", basis), np.sqrt(variance.astype(np.float64)) * scale)


def load_bfm2017(path: PathLike, landmarks: PathLike | None = None, contours: PathLike | None = None,
                 expression_mean: bool = True, scale_to_mm: float = 1.0) -> MorphableModelData:
    """Convert a BFM 2017 (or 2019) ``.h5``.

    Args:
        path: the ``.h5``.
        landmarks: 68 iBUG vertex indices (0-based ``.txt``/``.npy``, or an eos TOML mapping); none by default.
        contours: eos-style ``model_contours.json``, for frontal defaults of undefined jaw landmarks.
        expression_mean: add ``expression/model/mean`` to the mean shape (as eos and scalismo do).
        scale_to_mm: the file's length unit in millimetres (1).

    Returns:
        The canonical model (``has_albedo`` False when there is no ``color`` group).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such model file")
    h5py = _h5py()
    try:
        h5 = h5py.File(path, "r")
    except Exception as exc:
        raise ModelFormatError(path, f"not a readable HDF5 file ({type(exc).__name__}: {exc})") from exc
    with h5:
        dims: dict[str, int] = {}
        mean_shape, id_basis, id_std = _pca(path, h5, "shape/model", dims, scale_to_mm)
        V = mean_shape.shape[0]
        cells = expect_array(path, "shape/representer/cells", _read(path, h5, "shape/representer/cells"), [3, None])
        triangles = expect_triangles(path, "shape/representer/cells", cells.T, V)
        metadata = {"units": f"source x {scale_to_mm} -> mm", "id_std": "sqrt(pcaVariance) x scale_to_mm"}
        expression = {}
        if "expression/model/mean" in h5:
            exp_mean, exp_basis, exp_std = _pca(path, h5, "expression/model", dims, scale_to_mm)
            expression = dict(exp_basis=exp_basis, exp_std=exp_std)
            if expression_mean:
                mean_shape = mean_shape + exp_mean
            metadata["expression_mean_included"] = expression_mean
        albedo = {}
        if "color/model/mean" in h5:
            albedo_mean, albedo_basis, albedo_std = _pca(path, h5, "color/model", dims, 1.0)
            albedo = dict(albedo_mean=albedo_mean, albedo_basis=albedo_basis, albedo_std=albedo_std)
            metadata["albedo_std"] = "sqrt(pcaVariance), colours in [0, 1]"
    mapping, outlines, notes = landmarks_and_outlines(path, V, landmarks, contours)
    metadata.update(notes)
    return finish_model(
        path, mean_shape=mean_shape, id_basis=id_basis, id_std=id_std, triangles=triangles, landmarks=mapping,
        outlines=outlines, name=path.stem, source=f"Basel Face Model 2017 {path.name}", license=BFM_LICENSE,
        metadata=metadata, **expression, **albedo)
