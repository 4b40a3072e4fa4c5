"""3DDFA's compact BFM pickle (3DDFA_V2 ``configs/bfm_noneck_v3.pkl``).

Layout, as read by cleardusk/3DDFA_V2 ``bfm/bfm.py`` (``BFMModel``) and ``utils/tddfa_util.py``:

* ``u (3V, 1)`` mean shape, vertex-major (``reshape(3, -1, order='F')``), in BFM 2009 micrometres
  (the mean shape includes the expression mean);
* ``w_shp (3V, K_id)``: BFM 2009's orthonormal identity PCs (3DDFA's shape coefficients are in
  micrometres: their ``param_std`` starts near 5.8e5); ``w_exp (3V, K_exp)``: an expression basis scaled
  for roughly unit coefficients;
* ``tri (3, F)`` 0-based (3DDFA_V2 uses ``tri.T``); for ``bfm_noneck_v3.pkl`` 3DDFA_V2 replaces it
  with ``configs/tri.pkl`` ("re-built for bfm_noneck_v3") - pass that as ``triangles``;
* ``keypoints (204,)``: indices into the flattened ``3V`` array, x/y/z of each of the 68 iBUG landmarks.

There is no per-mode standard deviation in the file. Converted bases are unit-normalised columns and
``std_k = ‖w_k‖ · coefficient_std_k · scale``: exact when ``coefficient_std`` is 3DDFA's own
``param_mean_std_62d_120x120.pkl`` (``param_stats``: the spread of its training fits), otherwise
``coefficient_std = 1``, which is a real prior only for a σ-scaled basis (``w_exp``) - for the
orthonormal ``w_shp`` it is just the basis scale, and a warning says so.

Pickles can execute code when loaded. This reader only lets numpy arrays and plain containers
through, but still: only convert files you trust.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np

from ..model_format import ModelFormatError, MorphableModelData
from .common import LandmarkMapping, PathLike, expect_array, expect_triangles, finish_model, landmarks_and_outlines, \
    vertex_major
from .deep3d_exp import MICROMETRES_TO_MM

REQUIRED_KEYS = ("u", "w_shp", "w_exp", "tri", "keypoints")
POSE_PARAMS = 12
ORTHONORMAL_TOLERANCE = 1e-3
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Refuses every global except numpy's array reconstruction (no arbitrary callables)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def read_pickle(path: PathLike):
    """Unpickle ``path`` allowing only numpy arrays, dicts, lists and scalars (Python 2 pickles too)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such file")
    try:
        with open(path, "rb") as fh:
            return _ArraysOnlyUnpickler(fh, encoding="latin1").load()
    except Exception as exc:
        raise ModelFormatError(path, f"not a readable numpy pickle ({type(exc).__name__}: {exc})") from exc


def _triangles(path: Path, name: str, tri: np.ndarray, num_vertices: int) -> tuple[np.ndarray, bool]:
    """0-based (F, 3) from 3DDFA's (3, F) (or (F, 3)); 1-based lists (max index == V) are shifted."""
    tri = np.asarray(tri)
    if tri.ndim == 2 and tri.shape[0] == 3 and tri.shape[1] != 3:
        tri = tri.T
    one_based = tri.size > 0 and np.issubdtype(tri.dtype, np.number) and tri.min() >= 1 and tri.max() == num_vertices
    try:
        return expect_triangles(path, name, tri, num_vertices, one_based=one_based), one_based
    except ModelFormatError as exc:
        hint = " (for bfm_noneck_v3.pkl pass triangles=configs/tri.pkl from 3DDFA_V2)" if name == "tri" else ""
        raise ModelFormatError(path, f"{str(exc).split(': ', 1)[-1]}{hint}") from exc


def _keypoint_vertices(path: Path, keypoints: np.ndarray, num_vertices: int) -> np.ndarray:
    """68 vertex indices from 3DDFA's 204 flat-array indices (x, y, z of each landmark) or 68 vertices."""
    keypoints = np.asarray(keypoints).reshape(-1).astype(np.int64)
    if keypoints.shape == (68,):
        vertices = keypoints
    elif keypoints.shape == (204,):
        xyz = keypoints.reshape(68, 3)
        if not (np.all(xyz[:, 0] % 3 == 0) and np.all(xyz[:, 1:] == xyz[:, :1] + np.array([1, 2]))):
            raise ModelFormatError(path, "'keypoints' must be x, y, z flat-array indices (3i, 3i+1, 3i+2) per landmark")
        vertices = xyz[:, 0] // 3
    else:
        raise ModelFormatError(path, f"'keypoints' must have 204 (68 x xyz) or 68 entries, got {keypoints.shape}")
    if vertices.min() < 0 or vertices.max() >= num_vertices:
        raise ModelFormatError(path, f"'keypoints' index vertices outside [0, {num_vertices})")
    return vertices


def _coefficient_std(path: Path, id_dims: int, exp_dims: int) -> tuple[np.ndarray, np.ndarray]:
    stats = read_pickle(path)
    std = stats.get("std", stats.get("param_std")) if isinstance(stats, dict) else None
    if std is None:
        raise ModelFormatError(path, "expected a dict with 'std' (or 'param_std'), like 3DDFA_V2's "
                                     "param_mean_std_62d_120x120.pkl")
    std = expect_array(path, "std", np.asarray(std, dtype=np.float64).reshape(-1), [POSE_PARAMS + id_dims + exp_dims])
    return std[POSE_PARAMS:POSE_PARAMS + id_dims], std[POSE_PARAMS + id_dims:]


def load_tddfa_pkl(path: PathLike, landmarks: PathLike | None = None, contours: PathLike | None = None,
                   triangles: PathLike | None = None, param_stats: PathLike | None = None,
                   id_dims: int | None = None, exp_dims: int | None = None,
                   scale_to_mm: float = MICROMETRES_TO_MM) -> MorphableModelData:
    """Convert a 3DDFA BFM pickle (see the module docstring for what the std means).

    Args:
        path: the ``.pkl``. Pickles can run code: only load trusted files (this reader refuses
            anything but numpy arrays).
        landmarks: a landmark file overriding the pickle's ``keypoints``.
        contours: eos-style ``model_contours.json`` (rarely needed: ``keypoints`` define the jaw).
        triangles: a pickled (3, F) or (F, 3) triangle array replacing ``tri`` (3DDFA_V2's ``tri.pkl``).
        param_stats: 3DDFA's ``param_mean_std_*.pkl`` (62 = 12 pose + 40 id + 10 exp) for real stds.
        id_dims, exp_dims: keep only the first modes (3DDFA_V2 uses 40 and 10).
        scale_to_mm: the file's length unit in millimetres (micrometres: 1e-3).

    Returns:
        The canonical model (no albedo, cylindrical UVs).
    """
    path = Path(path)
    content = read_pickle(path)
    if not isinstance(content, dict):
        raise ModelFormatError(path, f"not a 3DDFA BFM pickle: holds a {type(content).__name__}, expected a dict")
    missing = [key for key in REQUIRED_KEYS if key not in content and not (key == "tri" and triangles)]
    if missing:
        raise ModelFormatError(path, f"not a 3DDFA BFM pickle: missing {', '.join(missing)} "
                                     f"(found {', '.join(map(str, content)) or 'nothing'})")
    dims: dict[str, int] = {}
    u = expect_array(path, "u", np.asarray(content["u"]).reshape(-1), ["3V"], dims)
    w_shp = expect_array(path, "w_shp", content["w_shp"], ["3V", None], dims)[:, :id_dims].astype(np.float64)
    w_exp = expect_array(path, "w_exp", content["w_exp"], ["3V", None], dims)[:, :exp_dims].astype(np.float64)
    mean_shape = vertex_major(path, "u", u.astype(np.float64)) * scale_to_mm
    V = mean_shape.shape[0]
    if triangles is not None:
        tri, one_based = _triangles(Path(triangles), "triangles", read_pickle(triangles), V)
    else:
        tri, one_based = _triangles(path, "tri", content["tri"], V)
    norms = {name: np.linalg.norm(w, axis=0) for name, w in (("w_shp", w_shp), ("w_exp", w_exp))}
    for name, norm in norms.items():
        if (norm == 0).any():
            raise ModelFormatError(path, f"'{name}' has all-zero columns; cannot normalise")
    metadata = {"units": f"source x {scale_to_mm} -> mm", "triangles_one_based": bool(one_based),
                "std": "unit-normalised columns; std = column norm x coefficient std x scale_to_mm"}
    if param_stats is not None:
        id_coef, exp_coef = _coefficient_std(Path(param_stats), w_shp.shape[1], w_exp.shape[1])
        metadata["coefficient_std"] = f"3DDFA training-fit spread from {Path(param_stats).name}"
    else:
        id_coef, exp_coef = np.ones(w_shp.shape[1]), np.ones(w_exp.shape[1])
        metadata["coefficient_std"] = "1 (no param_stats given)"
        if np.all(np.abs(norms["w_shp"] - 1) < ORTHONORMAL_TOLERANCE):
            warnings.warn(f"{path}: 'w_shp' has unit columns, so without param_stats its std is only the basis "
                          "scale, not a prior; pass param_stats=param_mean_std_62d_120x120.pkl", stacklevel=2)
            metadata["id_std_warning"] = "w_shp is orthonormal; id_std is the basis scale, not a fitted prior"
    if landmarks is not None:
        mapping, outlines, notes = landmarks_and_outlines(path, V, landmarks, contours)
    else:
        _, outlines, notes = landmarks_and_outlines(path, V, None, contours)
        mapping = LandmarkMapping(_keypoint_vertices(path, content["keypoints"], V), source="keypoints")
    metadata.update(notes)
    return finish_model(
        path, mean_shape=mean_shape,
        id_basis=vertex_major(path, "w_shp", w_shp / norms["w_shp"]), id_std=norms["w_shp"] * id_coef * scale_to_mm,
        exp_basis=vertex_major(path, "w_exp", w_exp / norms["w_exp"]), exp_std=norms["w_exp"] * exp_coef * scale_to_mm,
        triangles=tri, landmarks=mapping, outlines=outlines, name=path.stem, source=f"3DDFA BFM pickle {path.name}",
        license="derived from the Basel Face Model 2009: academic use only", metadata=metadata)
