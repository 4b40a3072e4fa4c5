"""The canonical on-disk morphable-model format (``.npz``) and its in-memory twin.

Every loader (BFM 2009, BFM 2017, Deep3DFaceRecon's expression basis, the Surrey model,
3DDFA's compact BFM) converts into :class:`MorphableModelData`, which is saved with
:func:`save_model_npz` and read back with :func:`load_model_npz`.

Conventions (all loaders must produce them):

* Units are millimetres. Model space is right-handed, +x towards the subject's left
  (image right in a frontal photo), +y up, +z out of the face towards the viewer.
* Shape: ``S = mean_shape + id_basis · α_id + exp_basis · α_exp`` where ``α_id[k]`` has prior
  ``N(0, id_std[k]²)`` (and likewise for expression). Bases are stored ``(V, 3, K)``.
* Albedo: ``T = albedo_mean + albedo_basis · β``, RGB in [0, 1], ``β[k] ~ N(0, albedo_std[k]²)``.
  A model without an albedo model has ``has_albedo = False``, a uniform skin-tone mean and
  zero modes.
* ``triangles (F, 3)`` are 0-based and counter-clockwise seen from outside, so face normals
  point out of the face.
* ``uv (V, 2)`` in [0, 1], ``v`` up.
* ``landmark_indices (68,)``: the iBUG-68 vertex of each landmark (0-based landmark order);
  ``-1`` where the model does not define it. Contour landmarks hold their frontal vertex.
* ``contour_landmarks (C,)`` and ``contour_lines (C, K)``: for each marching contour landmark,
  its line of "parallel" vertices ordered from the face centre outwards, padded with ``-1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .atomic_io import atomic_write

FORMAT_NAME = "diffface-morphable-model"
FORMAT_VERSION = 1
NUM_LANDMARKS = 68
DEFAULT_SKIN_ALBEDO = (0.72, 0.55, 0.45)


class ModelFormatError(ValueError):
    """A morphable-model file is missing, corrupt or not of the expected layout."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}{problem}")


@dataclass
class MorphableModelData:
    """A morphable model as plain numpy arrays in the canonical layout (see module docstring).

    Shape:
        mean_shape: (V, 3); id_basis: (V, 3, K_id); id_std: (K_id,);
        exp_basis: (V, 3, K_exp); exp_std: (K_exp,);
        albedo_mean: (V, 3); albedo_basis: (V, 3, K_tex); albedo_std: (K_tex,);
        triangles: (F, 3) int; uv: (V, 2); landmark_indices: (68,) int;
        contour_landmarks: (C,) int; contour_lines: (C, K) int.
    """

    mean_shape: np.ndarray
    id_basis: np.ndarray
    id_std: np.ndarray
    exp_basis: np.ndarray
    exp_std: np.ndarray
    albedo_mean: np.ndarray
    albedo_basis: np.ndarray
    albedo_std: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    landmark_indices: np.ndarray
    contour_landmarks: np.ndarray
    contour_lines: np.ndarray
    has_albedo: bool = True
    name: str = "unnamed"
    source: str = ""
    license: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def id_dims(self) -> int:
        return int(self.id_basis.shape[2])

    @property
    def exp_dims(self) -> int:
        return int(self.exp_basis.shape[2])

    @property
    def tex_dims(self) -> int:
        return int(self.albedo_basis.shape[2]) if self.has_albedo else 0

    @property
    def num_landmarks(self) -> int:
        return int((self.landmark_indices >= 0).sum())

    def info(self) -> dict:
        """Summary figures, as printed by ``diffface model-info``."""
        return {
            "name": self.name,
            "vertices": self.num_vertices,
            "faces": self.num_faces,
            "id_dims": self.id_dims,
            "exp_dims": self.exp_dims,
            "tex_dims": self.tex_dims,
            "landmarks": self.num_landmarks,
            "contour_lines": int(self.contour_lines.shape[0]),
            "has_albedo": bool(self.has_albedo),
            "source": self.source,
        }

    def validate(self, path: str | Path | None = None) -> "MorphableModelData":
        """Check shapes, dtypes, index ranges and finiteness; raise :class:`ModelFormatError`."""
        V = self.mean_shape.shape[0] if self.mean_shape.ndim == 2 else -1

        def expect(cond: bool, problem: str) -> None:
            if not cond:
                raise ModelFormatError(path, problem)

        expect(self.mean_shape.ndim == 2 and self.mean_shape.shape[1] == 3,
               f"mean_shape must be (V, 3), got {self.mean_shape.shape}")
        expect(V >= 3, f"mean_shape has {V} vertices; a mesh needs at least 3")
        for prefix in ("id", "exp", "albedo"):
            basis = getattr(self, f"{prefix}_basis")
            std = getattr(self, f"{prefix}_std")
            expect(basis.ndim == 3 and basis.shape[:2] == (V, 3),
                   f"{prefix}_basis must be (V={V}, 3, K), got {basis.shape}")
            expect(std.shape == (basis.shape[2],),
                   f"{prefix}_std must be ({basis.shape[2]},) to match {prefix}_basis, got {std.shape}")
            expect(bool(np.all(std >= 0)), f"{prefix}_std has negative standard deviations")
        expect(self.albedo_mean.shape == (V, 3), f"albedo_mean must be (V={V}, 3), got {self.albedo_mean.shape}")
        expect(self.triangles.ndim == 2 and self.triangles.shape[1] == 3 and self.triangles.shape[0] >= 1,
               f"triangles must be (F, 3) with F >= 1, got {self.triangles.shape}")
        expect(np.issubdtype(self.triangles.dtype, np.integer), f"triangles must be integers, got {self.triangles.dtype}")
        expect(int(self.triangles.min()) >= 0 and int(self.triangles.max()) < V,
               f"triangles index vertices outside [0, {V}): range [{self.triangles.min()}, {self.triangles.max()}]")
        expect(self.uv.shape == (V, 2), f"uv must be (V={V}, 2), got {self.uv.shape}")
        expect(self.landmark_indices.shape == (NUM_LANDMARKS,),
               f"landmark_indices must be ({NUM_LANDMARKS},), got {self.landmark_indices.shape}")
        expect(int(self.landmark_indices.max(initial=-1)) < V and int(self.landmark_indices.min(initial=0)) >= -1,
               f"landmark_indices must be in [-1, {V})")
        expect(self.contour_lines.ndim == 2 and self.contour_lines.shape[0] == self.contour_landmarks.shape[0],
               f"contour_lines must be (C, K) with C = len(contour_landmarks) = {self.contour_landmarks.shape[0]}, "
               f"got {self.contour_lines.shape}")
        if self.contour_lines.size:
            expect(int(self.contour_lines.max()) < V and int(self.contour_lines.min()) >= -1,
                   f"contour_lines must index vertices in [-1, {V})")
            expect(bool(np.all(self.contour_lines[:, 0] >= 0)), "every contour line needs at least one vertex")
        if self.contour_landmarks.size:
            expect(int(self.contour_landmarks.min()) >= 0 and int(self.contour_landmarks.max()) < NUM_LANDMARKS,
                   "contour_landmarks must be landmark numbers in [0, 68)")
        for name in ("mean_shape", "id_basis", "id_std", "exp_basis", "exp_std", "albedo_mean",
                     "albedo_basis", "albedo_std", "uv"):
            expect(bool(np.isfinite(getattr(self, name)).all()), f"{name} contains NaN or infinite values")
        return self

    def canonical(self) -> "MorphableModelData":
        """Return a copy with canonical dtypes (float32 arrays, int64 indices, int32 triangles)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("triangles",):
                value = np.ascontiguousarray(value, dtype=np.int32)
            elif f.name in ("landmark_indices", "contour_landmarks", "contour_lines"):
                value = np.ascontiguousarray(value, dtype=np.int64)
            elif isinstance(value, np.ndarray):
                value = np.ascontiguousarray(value, dtype=np.float32)
            out[f.name] = value
        return MorphableModelData(**out)


_ARRAY_FIELDS = [f.name for f in fields(MorphableModelData) if f.type in ("np.ndarray",)]


def save_model_npz(model: MorphableModelData, path: str | Path) -> Path:
    """Validate ``model`` and write it to ``path`` in the canonical ``.npz`` format."""
    path = Path(path)
    model = model.canonical().validate(path)
    arrays = {name: getattr(model, name) for name in _ARRAY_FIELDS}
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": model.name,
        "source": model.source,
        "license": model.license,
        "has_albedo": bool(model.has_albedo),
        "metadata": model.metadata,
    }
    with atomic_write(path) as fh:
        np.savez(fh, header=np.array(json.dumps(header, default=_json_default)), **arrays)
    return path


def _json_default(value):
    """Let metadata hold numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} cannot be stored in a model file")


def is_canonical_npz(path: str | Path) -> bool:
    """True if ``path`` is an ``.npz`` with a diffface header."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "header" in data.files and json.loads(str(data["header"])).get("format") == FORMAT_NAME
    except Exception:
        return False


def read_model_header(path: str | Path, data) -> dict:
    """The diffface ``header`` of an open ``.npz`` (``numpy.load``), or :class:`ModelFormatError` naming the file
    and what is wrong: no header, a header that is not valid JSON or not an object, another format, or a
    newer version."""
    if "header" not in data.files:
        raise ModelFormatError(path, "not a diffface model (no 'header'); convert it first with "
                                     "`diffface convert-model`")
    try:
        text = str(data["header"])
    except ValueError as exc:  # an object array, which allow_pickle=False refuses
        raise ModelFormatError(path, f"its 'header' is not a JSON string ({exc})") from exc
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(path, f"its 'header' is not valid JSON ({exc}); the file is damaged, or was not "
                                     f"written by diffface") from exc
    if not isinstance(header, dict):
        raise ModelFormatError(path, f"its 'header' is JSON but not an object (a {type(header).__name__})")
    if header.get("format") != FORMAT_NAME:
        raise ModelFormatError(path, f"header names format {header.get('format')!r}, expected {FORMAT_NAME!r}")
    version = header.get("version", -1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFormatError(path, f"header version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise ModelFormatError(path, f"format version {version} is newer than this diffface supports "
                                     f"({FORMAT_VERSION}); upgrade diffface")
    return header


def load_model_npz(path: str | Path) -> MorphableModelData:
    """Read a canonical ``.npz`` model; raise :class:`ModelFormatError` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(path, "no such model file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zip errors, truncated files, pickles
        raise ModelFormatError(path, f"not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    with data:
        header = read_model_header(path, data)
        missing = [name for name in _ARRAY_FIELDS if name not in data.files]
        if missing:
            raise ModelFormatError(path, f"missing arrays: {', '.join(missing)}")
        try:
            arrays = {name: data[name] for name in _ARRAY_FIELDS}
        except Exception as exc:
            raise ModelFormatError(path, f"corrupt array data ({type(exc).__name__}: {exc})") from exc
    model = MorphableModelData(
        **arrays,
        has_albedo=bool(header.get("has_albedo", True)),
        name=str(header.get("name", path.stem)),
        source=str(header.get("source", "")),
        license=str(header.get("license", "")),
        metadata=dict(header.get("metadata", {})),
    )
    return model.canonical().validate(path)
