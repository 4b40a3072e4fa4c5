"""eos' own cereal ``.bin`` morphable models (e.g. ``sfm_shape_3448.bin``), read with eos-py.

eos stores PCA models as a mean, an orthonormal basis and eigenvalues (variances):
``PcaModel.draw_sample(c) = mean + orthonormal_basis · (sqrt(eigenvalues) * c)``, so
``std = sqrt(eigenvalues)``. A PCA expression model's mean is added to the shape mean
(``MorphableModel::get_mean`` in eos); blendshapes are offsets with unit weights. Texture coordinates
use the image convention (``v`` down; eos' ``write_obj`` writes ``1 - v``) and are flipped here.
Lengths are whatever the source model used: millimetres for the Surrey models (``scale_to_mm`` for
others, e.g. a BFM converted with eos' scripts is in micrometres).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model_format import ModelFormatError, MorphableModelData
from .common import PathLike, expect_array, expect_triangles, finish_model, find_beside, landmarks_and_outlines, \
    vertex_major
from .sfm_npz import BLENDSHAPE_STD, SFM_CONTOUR_FILES, SFM_LANDMARK_FILES

INSTALL_HINT = "reading eos .bin models needs eos-py: `pip install eos-py` (or `pip install diffface[eos]`)"
EOS_READ_ERRORS = (RuntimeError, ValueError, MemoryError, OverflowError, TypeError)


def _eos_morphablemodel():
    try:
        import eos
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return eos.morphablemodel


def _pca_arrays(path: Path, what: str, pca, dims: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean (V, 3), basis (V, 3, K), std (K,))`` of an eos ``PcaModel``."""
    mean = expect_array(path, f"{what} mean", pca.get_mean(), ["3V"], dims)
    basis = expect_array(path, f"{what} orthonormal basis", pca.get_orthonormal_pca_basis(), ["3V", None], dims)
    variances = expect_array(path, f"{what} eigenvalues", pca.get_eigenvalues(), [basis.shape[1]])
    if (variances < 0).any():
        raise ModelFormatError(path, f"{what} eigenvalues (PCA variances) must not be negative")
    return vertex_major(path, what, mean), vertex_major(path, what, basis), np.sqrt(variances)


def read_eos_blendshapes(path: PathLike, num_vertices: int) -> tuple[np.ndarray, list[str]]:
    """Read an eos blendshapes ``.bin``.

    Returns:
        ``(offsets (V, 3, E), names)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such blendshapes file")
    try:
        blendshapes = _eos_morphablemodel().load_blendshapes(str(path))
    except EOS_READ_ERRORS as exc:
        raise ModelFormatError(path, f"not a readable eos blendshapes .bin ({type(exc).__name__}: {exc})") from exc
    if not blendshapes:
        raise ModelFormatError(path, "holds no blendshapes")
    offsets = [expect_array(path, f"blendshape {b.name!r}", b.deformation, [3 * num_vertices]) for b in blendshapes]
    return vertex_major(path, "blendshapes", np.stack(offsets, axis=1)), [b.name for b in blendshapes]


def load_eos_bin(path: PathLike, landmarks: PathLike | None = None, contours: PathLike | None = None,
                 expression: PathLike | None = None, scale_to_mm: float = 1.0) -> MorphableModelData:
    """Convert an eos ``.bin`` morphable model.

    Args:
        path: the model ``.bin`` (shape PCA model, optional colour PCA model, optional expression
            PCA model or blendshapes, optional per-vertex texture coordinates).
        landmarks: iBUG mapping (eos TOML or 68 0-based indices); default ``ibug_to_sfm.txt`` beside
            ``path``. Undefined inner mouth corners get the outer ones, as for the numpy SFM.
        contours: eos ``model_contours.json``; default ``sfm_model_contours.json`` beside ``path``.
        expression: eos blendshapes ``.bin`` for a model without an expression model; default
            ``expression_blendshapes_<V>.bin`` beside ``path`` if present.
        scale_to_mm: length unit of the file in millimetres (1 for the Surrey models).

    Returns:
        The canonical model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such model file")
    morphablemodel = _eos_morphablemodel()
    try:
        model = morphablemodel.load_model(str(path))
    except EOS_READ_ERRORS as exc:
        raise ModelFormatError(path, f"not a readable eos model .bin ({type(exc).__name__}: {exc})") from exc
    dims: dict[str, int] = {}
    shape = model.get_shape_model()
    mean_shape, id_basis, id_std = _pca_arrays(path, "shape model", shape, dims)
    V = mean_shape.shape[0]
    triangles = expect_triangles(path, "shape triangle list", np.asarray(shape.get_triangle_list()).reshape(-1, 3), V)
    metadata: dict = {"id_std": "sqrt(eigenvalues)", "scale_to_mm": scale_to_mm}
    exp_basis = exp_std = None
    kind = model.get_expression_model_type()
    if expression is not None and kind != morphablemodel.MorphableModel.ExpressionModelType.none:
        raise ModelFormatError(path, f"already has an expression model ({kind.name}); expression= is only for "
                                     "models without one")
    if kind == morphablemodel.MorphableModel.ExpressionModelType.PcaModel:
        exp_mean, exp_basis, exp_std = _pca_arrays(path, "expression model", model.get_expression_model(), dims)
        mean_shape = mean_shape + exp_mean
        exp_std = exp_std * scale_to_mm
        metadata["expression"] = "eos PCA expression model (its mean added to the shape mean)"
    elif kind == morphablemodel.MorphableModel.ExpressionModelType.Blendshapes:
        blendshapes = model.get_expression_model()
        exp_basis = vertex_major(path, "blendshapes", np.stack(
            [expect_array(path, "blendshape", b.deformation, [3 * V]) for b in blendshapes], axis=1)) * scale_to_mm
        exp_std = np.full(exp_basis.shape[2], BLENDSHAPE_STD)
        metadata["expression_names"] = [b.name for b in blendshapes]
    else:
        expression = expression if expression is not None else find_beside(path, [f"expression_blendshapes_{V}.bin"])
        if expression is not None:
            offsets, names = read_eos_blendshapes(expression, V)
            exp_basis, exp_std = offsets * scale_to_mm, np.full(offsets.shape[2], BLENDSHAPE_STD)
            metadata.update(expression=f"eos blendshapes from {Path(expression).name}", expression_names=names)
    albedo_mean = albedo_basis = albedo_std = None
    if model.has_color_model():
        albedo_mean, albedo_basis, albedo_std = _pca_arrays(path, "colour model", model.get_color_model(), dims)
        metadata["albedo_std"] = "sqrt(eigenvalues), colours in [0, 1]"
    uv = None
    texcoords = np.asarray(model.get_texture_coordinates(), dtype=np.float64).reshape(-1, 2)
    if texcoords.shape[0] == V:
        uv = np.stack([texcoords[:, 0], 1.0 - texcoords[:, 1]], axis=1)
    elif texcoords.shape[0]:
        metadata["uv_note"] = (f"the file's {texcoords.shape[0]} texture coordinates use their own triangulation, "
                               "not one per vertex; generated cylindrical ones instead")
    mapping, outlines, notes = landmarks_and_outlines(path, V, landmarks, contours, SFM_LANDMARK_FILES,
                                                      SFM_CONTOUR_FILES, fill_mouth=True)
    metadata.update(notes)
    return finish_model(
        path, mean_shape=mean_shape * scale_to_mm, id_basis=id_basis, id_std=id_std * scale_to_mm,
        triangles=triangles, exp_basis=exp_basis, exp_std=exp_std, albedo_mean=albedo_mean,
        albedo_basis=albedo_basis, albedo_std=albedo_std, uv=uv, landmarks=mapping, outlines=outlines,
        name=path.stem, source=f"eos model {path.name}", metadata=metadata)
