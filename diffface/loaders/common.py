"""What every model loader shares: source-array checks, landmark and contour side files, and the
final assembly into a validated :class:`~diffface.model_format.MorphableModelData`."""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..contours import IBUG_CONTOUR, IBUG_EYE_OUTER_CORNERS, IBUG_LEFT_CONTOUR, IBUG_RIGHT_CONTOUR, \
    build_contour_lines, frontal_contour_vertices
from ..model_format import DEFAULT_SKIN_ALBEDO, NUM_LANDMARKS, ModelFormatError, MorphableModelData
from ..uv import cylindrical_uv, orient_triangles_outward

PathLike = str | Path
PLAUSIBLE_FACE_SIZE_MM = (20.0, 2000.0)


@dataclass(frozen=True)
class LandmarkMapping:
    """The iBUG-68 landmarks of a model.

    Attributes:
        indices: ``(68,)`` int64 vertex of every landmark (0-based landmark order), ``-1`` where undefined.
        contour_landmarks: 0-based numbers of the landmarks that march along the face contour.
        source: where the mapping came from (for the model's metadata).
    """

    indices: np.ndarray
    contour_landmarks: tuple[int, ...] = IBUG_CONTOUR
    source: str = ""

    @classmethod
    def undefined(cls) -> "LandmarkMapping":
        return cls(np.full(NUM_LANDMARKS, -1, dtype=np.int64), IBUG_CONTOUR, "none")


def expect_array(path: PathLike, name: str, value, shape: Sequence[int | str | None],
                 bound: dict[str, int] | None = None) -> np.ndarray:
    """Return ``value`` as an array of the expected shape, or raise :class:`ModelFormatError` naming
    ``path`` and the source's own key ``name``.

    Args:
        path: the model file (for the message).
        name: the array's name in the source format (``shapePC``, ``w_shp``...).
        value: anything ``np.asarray`` accepts.
        shape: expected dimensions: an ``int`` must match, ``None`` matches anything, a string is a
            symbol that must have the same size wherever it appears (also across calls sharing ``bound``).
        bound: symbol sizes seen so far; updated in place.

    Returns:
        The array (float arrays are also checked to be finite).
    """
    bound = {} if bound is None else bound
    try:
        array = np.asarray(value)
    except Exception as exc:
        raise ModelFormatError(path, f"'{name}' is not an array ({exc})") from exc
    wanted = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
    if array.ndim != len(shape) or array.dtype == object:
        raise ModelFormatError(path, f"'{name}' must have shape {wanted}, got {array.shape}")
    for want, have in zip(shape, array.shape):
        if isinstance(want, int) and want != have:
            raise ModelFormatError(path, f"'{name}' must have shape {wanted}, got {array.shape}")
        if isinstance(want, str):
            if bound.setdefault(want, have) != have:
                raise ModelFormatError(path, f"'{name}' has {have} along {want}, expected {bound[want]} "
                                             f"(shape {array.shape}, expected {wanted})")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ModelFormatError(path, f"'{name}' must be numeric, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ModelFormatError(path, f"'{name}' contains NaN or infinite values")
    return array


def expect_triangles(path: PathLike, name: str, triangles: np.ndarray, num_vertices: int,
                     one_based: bool = False) -> np.ndarray:
    """Check integral, in-range triangle indices and return them 0-based as int64. Shape: (F, 3)."""
    triangles = np.asarray(triangles)
    if triangles.ndim != 2 or triangles.shape[1] != 3 or triangles.shape[0] == 0:
        raise ModelFormatError(path, f"'{name}' must be (F, 3) triangles, got {triangles.shape}")
    if not np.issubdtype(triangles.dtype, np.integer):
        if not np.isfinite(triangles).all() or not np.all(triangles == np.round(triangles)):
            raise ModelFormatError(path, f"'{name}' must hold integer vertex indices")
    triangles = triangles.astype(np.int64) - (1 if one_based else 0)
    low, high = int(triangles.min()), int(triangles.max())
    if low < 0 or high >= num_vertices:
        base = "1-based" if one_based else "0-based"
        raise ModelFormatError(path, f"'{name}' ({base}) indexes vertices outside the model's {num_vertices}: "
                                     f"range [{low + one_based}, {high + one_based}]")
    return triangles


def vertex_major(path: PathLike, name: str, flat: np.ndarray) -> np.ndarray:
    """``x0, y0, z0, x1, ...`` vectors to per-vertex arrays. Shape: (3V,) -> (V, 3); (3V, K) -> (V, 3, K)."""
    if flat.shape[0] % 3:
        raise ModelFormatError(path, f"'{name}' has {flat.shape[0]} rows, not a multiple of 3 (x, y, z per vertex)")
    return flat.reshape(flat.shape[0] // 3, 3, *flat.shape[1:])


def find_beside(path: PathLike, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that exists in the folder of ``path``, else ``None``."""
    for name in names:
        candidate = Path(path).parent / name
        if candidate.is_file():
            return candidate
    return None


def read_landmarks(path: PathLike, num_vertices: int) -> LandmarkMapping:
    """Read a 68-landmark vertex mapping.

    Accepted files: ``.npy`` or text with 68 integers (0-based vertex indices in iBUG order, ``-1``
    for undefined, ``#`` comments allowed), or an eos-style TOML mapping (``[landmark_mappings]``
    with 1-based iBUG numbers as keys, and optional ``[contour_landmarks]`` ``right``/``left`` lists).

    Args:
        path: the landmark file.
        num_vertices: the model's vertex count, to range-check the indices.

    Returns:
        The mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such landmark file")
    contour = IBUG_CONTOUR
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ModelFormatError(path, f"not a readable .npy landmark file ({exc})") from exc
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFormatError(path, f"not a readable text landmark file ({exc})") from exc
        if "[landmark_mappings]" in text:
            values, contour = _parse_eos_mapping(path, text)
        else:
            tokens = re.split(r"[\s,]+", re.sub(r"#[^\n]*", " ", text).strip())
            try:
                values = np.array([int(token) for token in tokens if token], dtype=np.int64)
            except ValueError as exc:
                raise ModelFormatError(path, f"landmark file must hold {NUM_LANDMARKS} integers ({exc})") from exc
    values = np.asarray(values).reshape(-1)
    if values.shape != (NUM_LANDMARKS,) or not np.issubdtype(values.dtype, np.integer):
        raise ModelFormatError(path, f"expected {NUM_LANDMARKS} integer vertex indices, got {values.shape} "
                                     f"{values.dtype}")
    if values.min() < -1 or values.max() >= num_vertices:
        raise ModelFormatError(path, f"landmark vertex indices must be in [-1, {num_vertices}), "
                                     f"got [{values.min()}, {values.max()}]")
    return LandmarkMapping(values.astype(np.int64), contour, path.name)


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as exc:
            raise ImportError("reading eos TOML landmark mappings needs Python >= 3.11 or `pip install tomli`") from exc
    return tomllib


def _parse_eos_mapping(path: Path, text: str) -> tuple[np.ndarray, tuple[int, ...]]:
    toml = _toml()
    try:
        table = toml.loads(text)
        indices = np.full(NUM_LANDMARKS, -1, dtype=np.int64)
        for ibug, vertex in table["landmark_mappings"].items():
            number = int(ibug)
            if not 1 <= number <= NUM_LANDMARKS:
                raise ValueError(f"iBUG landmark {number} is not in 1..{NUM_LANDMARKS}")
            indices[number - 1] = int(vertex)
        sides = table.get("contour_landmarks", {})
        contour = tuple(int(n) - 1 for n in [*sides.get("right", []), *sides.get("left", [])]) or IBUG_CONTOUR
    except (toml.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(path, f"not a valid eos landmark mapping ({type(exc).__name__}: {exc})") from exc
    if not all(0 <= n < NUM_LANDMARKS for n in contour):
        raise ModelFormatError(path, f"contour landmarks must be iBUG numbers 1..{NUM_LANDMARKS}")
    return indices, contour


def read_contour_outlines(path: PathLike, num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Read an eos-style ``model_contours.json``: the right and left face outline vertex lists.

    Returns:
        ``(right, left)`` 0-based vertex indices, each (N,) int64.
    """
    path = Path(path)
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))["model_contour"]
        outlines = tuple(np.asarray(table[side], dtype=np.int64).reshape(-1)
                         for side in ("right_contour", "left_contour"))
    except FileNotFoundError as exc:
        raise ModelFormatError(path, "no such contour file") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(path, f"not an eos contour file with model_contour.right_contour/left_contour "
                                     f"({type(exc).__name__}: {exc})") from exc
    for outline in outlines:
        if outline.size < 2 or outline.min() < 0 or outline.max() >= num_vertices:
            raise ModelFormatError(path, f"contour outlines need >= 2 vertex indices in [0, {num_vertices})")
    return outlines


def fill_inner_mouth_corners(indices: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Use the outer mouth corners (iBUG 49, 55) for undefined inner ones (61, 65), as eos does.

    Returns:
        The completed indices and a ``{"61": "49 (vertex 398)"}``-style record for the metadata.
    """
    indices = indices.copy()
    record = {}
    for inner, outer in ((60, 48), (64, 54)):
        if indices[inner] < 0 <= indices[outer]:
            indices[inner] = indices[outer]
            record[str(inner + 1)] = f"{outer + 1} (vertex {indices[outer]})"
    return indices, record


def landmarks_and_outlines(path: PathLike, num_vertices: int, landmarks: PathLike | None,
                           contours: PathLike | None, beside_landmarks: Sequence[str] = (),
                           beside_contours: Sequence[str] = (), fill_mouth: bool = False,
                           ) -> tuple[LandmarkMapping | None, tuple[np.ndarray, np.ndarray] | None, dict]:
    """Read the landmark and contour side files of a model, given or found beside it.

    Args:
        path: the model file.
        num_vertices: its vertex count.
        landmarks, contours: explicit side files, or ``None`` to look for ``beside_*`` names.
        fill_mouth: complete undefined inner mouth corners (see :func:`fill_inner_mouth_corners`).

    Returns:
        ``(mapping or None, outlines or None, metadata notes)``.
    """
    notes: dict = {}
    landmarks = landmarks if landmarks is not None else find_beside(path, beside_landmarks)
    contours = contours if contours is not None else find_beside(path, beside_contours)
    mapping = None
    if landmarks is not None:
        mapping = read_landmarks(landmarks, num_vertices)
        if fill_mouth:
            indices, record = fill_inner_mouth_corners(mapping.indices)
            if record:
                mapping = LandmarkMapping(indices, mapping.contour_landmarks, mapping.source)
                notes["landmark_substitutions"] = record
    outlines = None
    if contours is not None:
        outlines = read_contour_outlines(contours, num_vertices)
        notes["contour_outlines"] = Path(contours).name
    return mapping, outlines, notes


def _contour_landmarks(mean_shape: np.ndarray, landmarks: LandmarkMapping,
                       outlines: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, list[int], bool]:
    """Landmark indices with frontal defaults for undefined contour landmarks, and the marching ones."""
    indices = landmarks.indices.copy()
    defaulted = False
    if outlines is not None:
        corners = indices[list(IBUG_EYE_OUTER_CORNERS)]
        top_y = float(mean_shape[corners, 1].mean()) if (corners >= 0).all() else None
        for side, outline in zip((IBUG_RIGHT_CONTOUR, IBUG_LEFT_CONTOUR[::-1]), outlines):
            missing = [n for n in side if n in landmarks.contour_landmarks and indices[n] < 0]
            if missing:
                defaults = frontal_contour_vertices(mean_shape, outline, top_y, count=len(side))
                for number, vertex in zip(side, defaults):
                    if number in missing:
                        indices[number] = vertex
                defaulted = True
    marching = [n for n in landmarks.contour_landmarks if indices[n] >= 0]
    return indices, marching, defaulted


def finish_model(path: PathLike, *, mean_shape: np.ndarray, id_basis: np.ndarray, id_std: np.ndarray,
                 triangles: np.ndarray, exp_basis: np.ndarray | None = None, exp_std: np.ndarray | None = None,
                 albedo_mean: np.ndarray | None = None, albedo_basis: np.ndarray | None = None,
                 albedo_std: np.ndarray | None = None, uv: np.ndarray | None = None,
                 landmarks: LandmarkMapping | None = None,
                 outlines: tuple[np.ndarray, np.ndarray] | None = None,
                 name: str = "unnamed", source: str = "", license: str = "",
                 metadata: dict | None = None) -> MorphableModelData:
    """Assemble converted arrays into a validated canonical model.

    Fills what the source lacks (no expression or albedo model, no UVs, no landmarks), makes the
    winding counter-clockwise from outside, gives undefined contour landmarks frontal defaults along
    ``outlines`` and builds their marching lines, and records every such decision in ``metadata``.

    Args:
        path: the source file (named in errors).
        mean_shape, id_basis, id_std, ...: canonical arrays (millimetres, vertex-major), see
            :class:`~diffface.model_format.MorphableModelData`; ``None`` where the source has none.
        triangles: 0-based triangles, in any consistent winding.
        landmarks: the iBUG mapping, or ``None`` for none.
        outlines: ``(right, left)`` face outline vertices for frontal contour defaults.
        name, source, license: descriptive strings stored with the model.
        metadata: format-specific facts to keep (units, std conventions...).

    Returns:
        The model, canonical dtypes, validated against ``path``.

    Shape:
        mean_shape: (V, 3); id_basis: (V, 3, K_id); triangles: (F, 3); uv: (V, 2).
    """
    metadata = dict(metadata or {})
    mean_shape = np.asarray(mean_shape, dtype=np.float64)
    V = mean_shape.shape[0]
    size_mm = float(np.linalg.norm(mean_shape.max(0) - mean_shape.min(0)))
    if not PLAUSIBLE_FACE_SIZE_MM[0] <= size_mm <= PLAUSIBLE_FACE_SIZE_MM[1]:
        warnings.warn(f"{path}: the converted mean shape spans {size_mm:.3g} mm (bounding-box diagonal), not a "
                      f"face-sized {PLAUSIBLE_FACE_SIZE_MM} mm; check the length unit (scale_to_mm)", stacklevel=3)
    triangles, flipped = orient_triangles_outward(mean_shape, triangles)
    metadata["triangles_flipped_to_ccw"] = flipped
    if uv is None:
        uv = cylindrical_uv(mean_shape)
        metadata["uv"] = "cylindrical, generated by diffface (the source has no texture coordinates)"
    has_albedo = albedo_mean is not None
    if not has_albedo:
        albedo_mean = np.tile(np.asarray(DEFAULT_SKIN_ALBEDO), (V, 1))
        albedo_basis, albedo_std = np.zeros((V, 3, 0)), np.zeros(0)
    elif albedo_basis is None:
        albedo_basis, albedo_std = np.zeros((V, 3, 0)), np.zeros(0)
    if exp_basis is None:
        exp_basis, exp_std = np.zeros((V, 3, 0)), np.zeros(0)
    landmarks = LandmarkMapping.undefined() if landmarks is None else landmarks
    indices, marching, defaulted = _contour_landmarks(mean_shape, landmarks, outlines)
    metadata["landmarks"] = landmarks.source
    if defaulted:
        metadata["contour_landmark_defaults"] = ("frontal vertices spaced evenly along the face outline from the "
                                                 "outer-eye-corner height to the chin")
    lines = build_contour_lines(mean_shape, indices, marching) if marching else np.zeros((0, 0), np.int64)
    model = MorphableModelData(
        mean_shape=mean_shape, id_basis=id_basis, id_std=id_std, exp_basis=exp_basis, exp_std=exp_std,
        albedo_mean=albedo_mean, albedo_basis=albedo_basis, albedo_std=albedo_std, triangles=triangles, uv=uv,
        landmark_indices=indices, contour_landmarks=np.asarray(marching, dtype=np.int64), contour_lines=lines,
        has_albedo=has_albedo, name=name, source=source, license=license, metadata=metadata)
    return model.canonical().validate(path)
