"""The Basel Face Model 2009 (``PublicMM1/01_MorphableModel.mat``, MATLAB v5, read with scipy).

Layout and conventions, as used by eos ``share/scripts/convert-bfm2009-to-eos.py`` and
sicxu/Deep3DFaceRecon_pytorch ``util/load_mats.py`` (``transferBFM09``):

* ``shapeMU (3V, 1)`` vertex-major, in micrometres (Deep3DFaceRecon divides by 1e5 "to decimeter");
  ``V = 53490``.
* ``shapePC (3V, K)`` orthonormal; ``shapeEV (K, 1)`` are standard deviations, not variances
  (eos: "These are standard deviations, not eigenvalues!"; Deep3DFaceRecon multiplies ``shapePC`` by
  ``shapeEV``): ``S = shapeMU + shapePC · (shapeEV * c)``, ``c ~ N(0, 1)``.
* ``texMU (3V, 1)``, ``texPC``, ``texEV`` likewise, colours in [0, 255].
* ``tl (F, 3)`` 1-based triangles, wound clockwise seen from outside (eos swaps two indices);
  the winding is fixed geometrically here, whichever way the file has it.

Canonical output: ``mean = shapeMU · 1e-3`` mm, ``id_basis = shapePC``, ``id_std = shapeEV · 1e-3``
mm; ``albedo_mean = texMU / 255``, ``albedo_std = texEV / 255``. No landmarks, UVs or expressions are
in the file: pass a landmark file, and an ``Exp_Pca.bin`` (see :mod:`.deep3d_exp`) for expressions.
"""

from __future__ import annotations

from pathlib import Path

import scipy.io

from ..model_format import ModelFormatError, MorphableModelData
from .common import PathLike, expect_array, expect_triangles, finish_model, landmarks_and_outlines, vertex_major
from .deep3d_exp import MICROMETRES_TO_MM, add_expression, read_exp_pca_bin, read_vertex_index

REQUIRED_KEYS = ("shapeMU", "shapePC", "shapeEV", "tl")
TEXTURE_KEYS = ("texMU", "texPC", "texEV")
COLOUR_RANGE = 255.0
BFM_LICENSE = "Basel Face Model 2009: non-commercial research use under the University of Basel licence"


def read_mat(path: Path) -> dict:
    """``scipy.io.loadmat`` with every failure turned into :class:`ModelFormatError` naming the file."""
    if not path.is_file():
        raise ModelFormatError(path, "no such model file")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
        raise ModelFormatError(path, "MATLAB v7.3 (HDF5) .mat files are not supported; re-save it with "
                                     "save(..., '-v7') or use the original BFM file") from exc
    except Exception as exc:
        raise ModelFormatError(path, f"not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc


def load_bfm2009(path: PathLike, landmarks: PathLike | None = None, contours: PathLike | None = None,
                 expression: PathLike | None = None, expression_std: PathLike | None = None,
                 expression_index: PathLike | None = None, expression_mean: bool = False,
                 scale_to_mm: float = MICROMETRES_TO_MM) -> MorphableModelData:
    """Convert ``01_MorphableModel.mat``.

    Args:
        path: the ``.mat``.
        landmarks: 68 iBUG vertex indices (0-based ``.txt``/``.npy``, or an eos TOML mapping); none by default.
        contours: eos-style ``model_contours.json``, for frontal defaults of undefined jaw landmarks.
        expression: Deep3DFaceRecon's ``Exp_Pca.bin`` to add its expression modes.
        expression_std: its ``std_exp.txt`` (default: beside ``expression``).
        expression_index: ``BFM_exp_idx.mat`` mapping the basis' 53215 vertices into BFM's 53490;
            the model is cropped to them.
        expression_mean: add the file's ``expMU`` to the mean shape (Deep3DFaceRecon does not).
        scale_to_mm: the file's length unit in millimetres (micrometres: 1e-3).

    Returns:
        The canonical model.
    """
    path = Path(path)
    mat = read_mat(path)
    missing = [key for key in REQUIRED_KEYS if key not in mat]
    if missing:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "nothing"
        raise ModelFormatError(path, f"not a Basel Face Model 2009 .mat: missing {', '.join(missing)} (found {found})")
    dims: dict[str, int] = {}
    mean = expect_array(path, "shapeMU", mat["shapeMU"], ["3V", 1], dims)
    basis = expect_array(path, "shapePC", mat["shapePC"], ["3V", "K"], dims)
    std = expect_array(path, "shapeEV", mat["shapeEV"], ["K", 1], dims).reshape(-1)
    mean_shape = vertex_major(path, "shapeMU", mean.reshape(-1)) * scale_to_mm
    V = mean_shape.shape[0]
    triangles = expect_triangles(path, "tl", mat["tl"], V, one_based=True)
    metadata = {"units": f"source x {scale_to_mm} -> mm", "id_std": "shapeEV (standard deviations) x scale_to_mm"}
    albedo = {}
    if all(key in mat for key in TEXTURE_KEYS):
        tex_mean = expect_array(path, "texMU", mat["texMU"], ["3V", 1], dims)
        tex_basis = expect_array(path, "texPC", mat["texPC"], ["3V", "T"], dims)
        tex_std = expect_array(path, "texEV", mat["texEV"], ["T", 1], dims).reshape(-1)
        albedo = dict(albedo_mean=vertex_major(path, "texMU", tex_mean.reshape(-1)) / COLOUR_RANGE,
                      albedo_basis=vertex_major(path, "texPC", tex_basis), albedo_std=tex_std / COLOUR_RANGE)
        metadata["albedo_std"] = "texEV / 255"
    for name, values in (("shapeEV", std), ("texEV", albedo.get("albedo_std"))):
        if values is not None and (values < 0).any():
            raise ModelFormatError(path, f"'{name}' are standard deviations and must not be negative")
    mapping, outlines, notes = landmarks_and_outlines(path, V, landmarks, contours)
    metadata.update(notes)
    model = finish_model(
        path, mean_shape=mean_shape, id_basis=vertex_major(path, "shapePC", basis), id_std=std * scale_to_mm,
        triangles=triangles, landmarks=mapping, outlines=outlines, name=path.stem,
        source=f"Basel Face Model 2009 {path.name}", license=BFM_LICENSE, metadata=metadata, **albedo)
    if expression is None:
        return model
    basis_exp = read_exp_pca_bin(expression, expression_std, scale_to_mm=scale_to_mm)
    index = read_vertex_index(expression_index) if expression_index is not None else None
    return add_expression(model, basis_exp, index, include_mean=expression_mean, path=expression)
