"""Readers that convert published morphable models into diffface's canonical format.

:func:`load_any_model` detects the format of a file (or takes ``format=``) and returns a validated
:class:`~diffface.model_format.MorphableModelData` in millimetres, +y up, +z towards the viewer,
counter-clockwise triangles. :data:`FORMATS` maps format names to their loaders.

=========== ======================================= =====================================================
name        file                                    options (besides ``landmarks``, ``contours``)
=========== ======================================= =====================================================
diffface    canonical ``.npz`` (``save_model_npz``)  none (and no ``landmarks``/``contours`` either)
sfm-npz     Surrey Face Model ``.npz``              -
eos         eos cereal ``.bin`` (needs eos-py)      ``expression`` (blendshapes .bin), ``scale_to_mm``
bfm2009     BFM 2009 ``01_MorphableModel.mat``      ``expression`` (Exp_Pca.bin), ``expression_std``,
                                                    ``expression_index``, ``expression_mean``, ``scale_to_mm``
bfm2017     BFM 2017/2019 ``.h5`` (needs h5py)      ``expression_mean``, ``scale_to_mm``
3ddfa       3DDFA BFM ``.pkl``                      ``triangles``, ``param_stats``, ``id_dims``, ``exp_dims``,
                                                    ``scale_to_mm``
=========== ======================================= =====================================================

``landmarks``: 68 iBUG vertex indices (0-based ``.txt``/``.npy``) or an eos TOML mapping;
``contours``: an eos ``model_contours.json`` (face outlines, for frontal jaw-landmark defaults).
Options given as ``None`` are ignored, so a CLI can pass all of its flags through.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

import numpy as np

from ..model_format import (ModelFormatError, MorphableModelData, is_canonical_npz, load_model_npz,
                            read_model_header)
from .bfm2009 import load_bfm2009
from .bfm2017 import load_bfm2017
from .common import LandmarkMapping, read_contour_outlines, read_landmarks
from .deep3d_exp import ExpressionBasis, add_expression, read_exp_pca_bin, read_vertex_index
from .eos_bin import load_eos_bin, read_eos_blendshapes
from .sfm_npz import load_sfm_npz, looks_like_sfm_npz
from .tddfa_pkl import load_tddfa_pkl

FORMATS: dict[str, Callable[..., MorphableModelData]] = {
    "diffface": load_model_npz,
    "sfm-npz": load_sfm_npz,
    "eos": load_eos_bin,
    "bfm2009": load_bfm2009,
    "bfm2017": load_bfm2017,
    "3ddfa": load_tddfa_pkl,
}
SUPPORTED = ("diffface .npz (diffface), Surrey Face Model .npz (sfm-npz), eos .bin (eos), "
             "Basel Face Model 2009 .mat (bfm2009), Basel Face Model 2017 .h5 (bfm2017), 3DDFA .pkl (3ddfa)")
_BY_SUFFIX = {".mat": "bfm2009", ".h5": "bfm2017", ".hdf5": "bfm2017", ".pkl": "3ddfa", ".bin": "eos"}
_WRAPPED_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError)


def detect_format(path: str | Path) -> str:
    """The :data:`FORMATS` name for ``path``, from its extension and, for ``.npz``/``.bin``, its content.

    Raises:
        ModelFormatError: missing file, unknown extension, or a file that is only part of a model
            (an expression basis or blendshapes file).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such model file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        if is_canonical_npz(path):
            return "diffface"
        if looks_like_sfm_npz(path):
            return "sfm-npz"
        try:
            with np.load(path, allow_pickle=False) as data:
                found = ", ".join(data.files) or "nothing"
                if "header" in data.files:  # a diffface model whose header is broken: say how
                    read_model_header(path, data)
        except ModelFormatError:
            raise
        except Exception as exc:
            raise ModelFormatError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from exc
        raise ModelFormatError(path, f"an .npz that is neither a diffface model (no 'header') nor the Surrey model "
                                     f"(mean, shape_basis, shape_eigenvalues, triangles); found {found}. "
                                     f"Supported formats: {SUPPORTED}")
    if suffix == ".bin":
        lowered = path.name.lower()
        if "exp_pca" in lowered:
            raise ModelFormatError(path, "this is Deep3DFaceRecon's expression basis, not a whole model: convert "
                                         "the BFM 2009 .mat with expression=THIS_FILE")
        if "blendshape" in lowered:
            raise ModelFormatError(path, "this is an eos blendshapes file, not a whole model: convert the eos "
                                         "model .bin with expression=THIS_FILE")
    if suffix not in _BY_SUFFIX:
        raise ModelFormatError(path, f"unknown model file extension {suffix or '(none)'!r}; supported formats: "
                                     f"{SUPPORTED}")
    return _BY_SUFFIX[suffix]


def load_any_model(path: str | Path, format: str | None = None, **options) -> MorphableModelData:
    """Read any supported morphable model file as a canonical, validated model.

    Args:
        path: the model file.
        format: a :data:`FORMATS` name; ``None`` detects it (:func:`detect_format`).
        **options: format options (see the module docstring), e.g. ``landmarks=PATH``,
            ``contours=PATH``, ``expression=PATH``; ``None`` values are ignored.

    Returns:
        The model.

    Raises:
        ModelFormatError: naming ``path``, for unknown formats, options the format does not take, and
            missing, truncated or malformed files.
        ImportError: when the format's optional reader (eos-py, h5py) is not installed; the message
            gives the install command.

    Example:
        >>> model = load_any_model("sfm_3448.npz")  # doctest: +SKIP
        >>> model.info()["vertices"]  # doctest: +SKIP
        3448
    """
    options = {name: value for name, value in options.items() if value is not None}
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise ModelFormatError(path, f"unknown format {format!r}; supported formats: {', '.join(FORMATS)}")
    loader = FORMATS[format]
    accepted = [name for name in inspect.signature(loader).parameters if name != "path"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ModelFormatError(path, f"option(s) {', '.join(unknown)} do not apply to {format} files; "
                                     f"{format} accepts: {', '.join(accepted) or 'no options'}")
    try:
        return loader(path, **options)
    except ModelFormatError:
        raise
    except _WRAPPED_ERRORS as exc:
        raise ModelFormatError(path, f"could not be read as {format} ({type(exc).__name__}: {exc})") from exc


__all__ = [
    "FORMATS", "ExpressionBasis", "LandmarkMapping", "add_expression", "detect_format", "load_any_model",
    "load_bfm2009", "load_bfm2017", "load_eos_bin", "load_sfm_npz", "load_tddfa_pkl", "read_contour_outlines",
    "read_eos_blendshapes", "read_exp_pca_bin", "read_landmarks", "read_vertex_index",
]
