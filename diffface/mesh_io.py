"""Triangle meshes and scans: Wavefront ``.obj``, ``.ply``, ``.off``, VRML ``.wrl``, ``.npy``/``.npz``.

Only geometry is read: vertex positions and faces; polygons are fan-triangulated on read
(``a b c d`` -> ``a b c``, ``a c d``); texture coordinates, normals, colours, groups and materials
are ignored. :func:`read_mesh` dispatches on the suffix. Every reader returns float64 vertices
``(V, 3)`` and 0-based int64 triangles ``(F, 3)`` (``(0, 3)`` for a point cloud) and raises a
``ValueError`` naming the file (and, for text formats, the line where it can) on bad input.

- ``.obj``: ``v x y z`` lines and ``f`` lines (1-based, ``i``, ``i/t``, ``i//n`` or ``i/t/n``
  references, negative indices counted from the end).
- ``.ply``: ASCII, binary little- or big-endian; ``vertex`` x/y/z, ``face`` ``vertex_indices`` (or
  ``vertex_index``) lists; other elements and properties are skipped.
- ``.off``: ``OFF``/``COFF``/``NOFF`` headers; per-vertex and per-face colours are skipped.
- ``.wrl``: VRML 2.0 ``IndexedFaceSet`` (``coord Coordinate { point [...] }`` and
  ``coordIndex [...]``, ``-1``-separated, as in the BU-4DFE scans) or VRML 1.0 ``Coordinate3``;
  several shapes are concatenated.
- ``.npy``: a ``(V, 3)`` point array (no faces); ``.npz``: ``vertices`` and optional ``faces``.
"""

from __future__ import annotations

import gc
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .atomic_io import write_bytes_atomic, write_text_atomic

def _check_mesh_arrays(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces as arrays, or a ``ValueError`` saying what is wrong. Shape: (V, 3), (F, 3)."""
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and not np.issubdtype(faces.dtype, np.integer)):
        raise ValueError(f"faces must be integer (F, 3), got {faces.dtype} {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"faces index vertices outside 0..{len(vertices) - 1}")
    if not np.isfinite(vertices).all():
        raise ValueError("vertices contain NaN or infinite values")
    return vertices, faces


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> Path:
    """Write a triangle mesh as an ``.obj`` file (atomically: a temporary file, then a rename).

    Coordinates are written as float64 in their shortest exact decimal form (Python's ``repr``),
    so :func:`read_obj` gives them back bit for bit (float32 input comes back as the same values
    in float64). Round values first (e.g. to 0.1 µm) to keep files small.

    Args:
        path: the file to write.
        vertices: vertex positions.
        faces: 0-based vertex indices of counter-clockwise triangles.

    Returns:
        ``path``.

    Shape:
        vertices: (V, 3); faces: (F, 3).

    Example:
        >>> write_obj("mesh.obj", np.eye(3), np.array([[0, 1, 2]]))
    """
    path = Path(path)
    vertices, faces = _check_mesh_arrays(vertices, faces)
    # one format string for the whole array: several times faster than a line at a time
    vertex_lines = ("v %r %r %r\n" * len(vertices)) % tuple(vertices.astype(np.float64).ravel().tolist())
    face_lines = ("f %d %d %d\n" * len(faces)) % tuple((faces.astype(np.int64) + 1).ravel().tolist())
    header = f"# diffface mesh: {len(vertices)} vertices, {len(faces)} triangles\n"
    return write_text_atomic(path, header + vertex_lines + face_lines)


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the vertices and triangles of an ``.obj`` file.

    Args:
        path: the file to read.

    Returns:
        ``(vertices, faces)``: float64 positions and 0-based int64 triangles (polygons
        fan-triangulated: ``a b c d`` -> ``a b c``, ``a c d``).

    Raises:
        ValueError: naming the file (and line), if it cannot be read, holds no vertices, a
            malformed ``v`` or ``f`` line, non-finite coordinates or an out-of-range index.

    Shape:
        -> vertices (V, 3), faces (F, 3).

    Example:
        >>> vertices, faces = read_obj("mesh.obj")
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read mesh file ({exc})") from exc
    with _cycle_collector_paused():
        return _parse_obj(path, text)


@contextmanager
def _cycle_collector_paused():
    """Parsing allocates ~10^5 small lists that can form no cycles; left on, Python's cycle collector
    spends most of the reading time walking them (0.6 s instead of 0.15 s for 26k vertices)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_obj(path: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_obj` on the file's text (``path`` only names it in errors)."""
    vertex_rows: list[tuple[int, list[str]]] = []  # (line number, tokens)
    # (line number, tokens, vertices defined so far: what negative indices count back from)
    face_rows: list[tuple[int, list[str], int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if tokens and tokens[0] == "v":
            vertex_rows.append((number, tokens))
        elif tokens and tokens[0] == "f":
            face_rows.append((number, tokens, len(vertex_rows)))
    if not vertex_rows:
        raise ValueError(f"{path}: no vertices ('v' lines) found; not an .obj mesh")
    vertices = _parse_vertices(path, vertex_rows)
    if not np.isfinite(vertices).all():
        raise ValueError(f"{path}: vertex coordinates contain NaN or infinite values")
    return vertices, _parse_faces(path, face_rows, len(vertices))


def _malformed(path: Path, number: int, tokens: list[str], reason: object) -> ValueError:
    return ValueError(f"{path}:{number}: malformed '{tokens[0]}' line {' '.join(tokens)!r} ({reason})")


def _parse_vertices(path: Path, rows: list[tuple[int, list[str]]]) -> np.ndarray:
    """Positions of ``v`` lines. Shape: -> (V, 3) float64."""
    try:  # fast path: every line is exactly ``v x y z``
        return np.array([tokens[1:] for _, tokens in rows], dtype=np.float64).reshape(len(rows), 3)
    except ValueError:
        pass
    vertices = []
    for number, tokens in rows:
        try:
            if len(tokens) < 4:
                raise ValueError("a vertex needs 3 coordinates")
            vertices.append([float(t) for t in tokens[1:4]])
        except ValueError as exc:
            raise _malformed(path, number, tokens, exc) from exc
    return np.array(vertices, dtype=np.float64)


def _parse_faces(path: Path, rows: list[tuple[int, list[str], int]], num_vertices: int) -> np.ndarray:
    """0-based fan triangles of ``f`` lines (1-based or negative, relative indices). Shape: -> (F, 3)."""
    try:  # fast path: every line is a triangle of plain positive indices in range
        faces = np.array([tokens[1:] for _, tokens, _ in rows], dtype=np.int64).reshape(len(rows), 3) - 1
        if faces.size == 0 or (faces.min() >= 0 and faces.max() < num_vertices):
            return faces
    except ValueError:
        pass
    triangles: list[list[int]] = []
    for number, tokens, defined_so_far in rows:
        try:
            if len(tokens) < 4:
                raise ValueError("a face needs at least 3 vertices")
            indices = [int(t.split("/")[0]) for t in tokens[1:]]
        except ValueError as exc:
            raise _malformed(path, number, tokens, exc) from exc
        resolved = []
        for index in indices:
            zero_based = index - 1 if index > 0 else defined_so_far + index
            if index == 0 or not 0 <= zero_based < num_vertices:
                raise ValueError(f"{path}:{number}: face index {index} is out of range for {num_vertices} vertices")
            resolved.append(zero_based)
        triangles += [[resolved[0], resolved[k], resolved[k + 1]] for k in range(1, len(resolved) - 1)]
    return np.array(triangles, dtype=np.int64).reshape(-1, 3)


# -- shared helpers for the other formats -------------------------------------------------------

def _checked_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 (V, 3) / int64 (F, 3), finite, indices in range; errors name ``path``."""
    vertices = np.ascontiguousarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(vertices) == 0:
        raise ValueError(f"{path}: no vertices found")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{path}: vertex coordinates contain NaN or infinite values")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        bad = faces[(faces < 0) | (faces >= len(vertices))][0]
        raise ValueError(f"{path}: face index {bad} is out of range for {len(vertices)} vertices")
    return vertices, faces


def _fan_triangulate(polygons: list[list[int]]) -> np.ndarray:
    """Fan triangles of polygons given as 0-based index lists (fewer than 3 indices: dropped)."""
    triangles = [[p[0], p[k], p[k + 1]] for p in polygons for k in range(1, len(p) - 1)]
    return np.array(triangles, dtype=np.int64).reshape(-1, 3)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read mesh file ({exc})") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read mesh file ({exc})") from exc


# -- PLY ----------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
              colours: np.ndarray | None = None) -> Path:
    """Write a triangle mesh as a binary little-endian ``.ply`` file (atomically).

    Positions are stored as ``float`` (float32 input) or ``double`` (anything else), so
    :func:`read_ply` gives them back exactly; triangles as ``int`` lists.

    Args:
        path: the file to write.
        vertices: vertex positions.
        faces: 0-based vertex indices of counter-clockwise triangles.
        colours: optional per-vertex RGB, uint8 (0-255).

    Returns:
        ``path``.

    Shape:
        vertices: (V, 3); faces: (F, 3); colours: (V, 3).

    Example:
        >>> write_ply("mesh.ply", np.eye(3), np.array([[0, 1, 2]]))
    """
    path = Path(path)
    vertices, faces = _check_mesh_arrays(vertices, faces)
    if colours is not None:
        colours = np.asarray(colours)
        if colours.shape != vertices.shape or colours.dtype != np.uint8:
            raise ValueError(f"colours must be uint8 {vertices.shape}, got {colours.dtype} {colours.shape}")
    scalar, ply_type = ("<f4", "float") if vertices.dtype == np.float32 else ("<f8", "double")
    header = ["ply", "format binary_little_endian 1.0", "comment diffface mesh", f"element vertex {len(vertices)}",
              f"property {ply_type} x", f"property {ply_type} y", f"property {ply_type} z"]
    fields = [("xyz", scalar, (3,))]
    if colours is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        fields.append(("rgb", "u1", (3,)))
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    vertex_rows = np.empty(len(vertices), dtype=fields)
    vertex_rows["xyz"] = vertices
    if colours is not None:
        vertex_rows["rgb"] = colours
    face_rows = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_rows["n"], face_rows["v"] = 3, faces
    data = ("\n".join(header) + "\n").encode("ascii") + vertex_rows.tobytes() + face_rows.tobytes()
    return write_bytes_atomic(path, data)


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the vertices and triangles of a ``.ply`` file (ASCII or binary, either byte order).

    Args:
        path: the file to read.

    Returns:
        ``(vertices, faces)``: float64 x/y/z of the ``vertex`` element and 0-based int64 triangles
        of the ``face`` element's ``vertex_indices``/``vertex_index`` lists (fan-triangulated;
        ``(0, 3)`` without faces). Other properties (colours, normals) and elements are skipped.

    Raises:
        ValueError: naming the file, on a bad header, truncated data, missing x/y/z,
            non-finite coordinates or out-of-range indices.

    Shape:
        -> vertices (V, 3), faces (F, 3).

    Example:
        >>> vertices, faces = read_ply("scan.ply")
    """
    path = Path(path)
    data = _read_bytes(path)
    elements, byte_order, body_start = _ply_header(path, data)
    if byte_order is None:
        values = _ply_ascii_elements(path, data[body_start:], elements)
    else:
        values = _ply_binary_elements(path, data, body_start, elements, byte_order)
    vertex = values.get("vertex")
    if vertex is None or not all(axis in vertex for axis in "xyz"):
        raise ValueError(f"{path}: no 'vertex' element with x, y, z properties")
    vertices = np.stack([np.asarray(vertex[axis], dtype=np.float64) for axis in "xyz"], axis=1)
    face = values.get("face", {})
    polygons = face.get("vertex_indices", face.get("vertex_index"))
    if polygons is None:
        faces = np.zeros((0, 3), dtype=np.int64)
    elif isinstance(polygons, np.ndarray):  # every face had the same number of corners
        faces = _fan_triangulate_array(polygons)
    else:
        faces = _fan_triangulate([list(p) for p in polygons])
    return _checked_mesh(path, vertices, faces)


def _fan_triangulate_array(polygons: np.ndarray) -> np.ndarray:
    """Fan triangles of equal-length polygons. Shape: (F, K) -> (F·(K-2), 3)."""
    polygons = polygons.astype(np.int64)
    if polygons.shape[1] < 3:
        return np.zeros((0, 3), dtype=np.int64)
    k = np.arange(1, polygons.shape[1] - 1)
    return np.stack([np.repeat(polygons[:, :1], len(k), 1), polygons[:, k], polygons[:, k + 1]], -1).reshape(-1, 3)


def _ply_header(path: Path, data: bytes) -> tuple[list[dict], str | None, int]:
    """Elements ``[{name, count, properties: [(name, type) or (name, (count type, item type))]}]``,
    the byte order (None: ASCII) and where the body starts."""
    if not data.startswith(b"ply"):
        raise ValueError(f"{path}: not a PLY file (it does not start with 'ply')")
    match = re.search(rb"end_header[ \t]*\r?\n", data)
    if match is None:
        raise ValueError(f"{path}: PLY header has no 'end_header' line")
    header = data[:match.start()].decode("ascii", errors="replace").splitlines()
    elements: list[dict] = []
    byte_order: str | None = "missing"
    for number, line in enumerate(header, start=1):
        tokens = line.split()
        try:
            if not tokens or tokens[0] in ("ply", "comment", "obj_info"):
                continue
            if tokens[0] == "format":
                byte_order = _PLY_FORMATS[tokens[1]]
            elif tokens[0] == "element":
                elements.append({"name": tokens[1], "count": int(tokens[2]), "properties": []})
            elif tokens[0] == "property" and tokens[1] == "list":
                elements[-1]["properties"].append((tokens[4], (_PLY_TYPES[tokens[2]], _PLY_TYPES[tokens[3]])))
            elif tokens[0] == "property":
                elements[-1]["properties"].append((tokens[2], _PLY_TYPES[tokens[1]]))
            else:
                raise ValueError(f"unknown keyword {tokens[0]!r}")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{path}:{number}: malformed PLY header line {line!r} ({exc!r})") from exc
    if byte_order == "missing":
        raise ValueError(f"{path}: PLY header has no 'format' line")
    return elements, byte_order, match.end()


def _ply_binary_elements(path: Path, data: bytes, offset: int, elements: list[dict],
                         byte_order: str) -> dict[str, dict]:
    values: dict[str, dict] = {}
    for element in elements:
        properties, count = element["properties"], element["count"]
        lists = [p for p in properties if not isinstance(p[1], str)]
        try:
            if not lists:
                dtype = np.dtype([(name, byte_order + t) for name, t in properties])
                rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
                values[element["name"]] = {name: rows[name] for name, _ in properties}
                offset += dtype.itemsize * count
            else:
                parsed, offset = _ply_binary_list_element(data, offset, properties, count, byte_order)
                values[element["name"]] = parsed
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{path}: PLY element '{element['name']}' is truncated or malformed ({exc})") from exc
    return values


def _ply_binary_list_element(data: bytes, offset: int, properties: list, count: int,
                             byte_order: str) -> tuple[dict, int]:
    """An element with list properties. Fast path: every list as long as the first row's."""
    def row_dtype(lengths: list[int]) -> np.dtype:
        fields, k = [], 0
        for name, t in properties:
            if isinstance(t, str):
                fields.append((name, byte_order + t))
            else:
                fields += [(f"{name}__n", byte_order + t[0]), (name, byte_order + t[1], (lengths[k],))]
                k += 1
        return np.dtype(fields)

    if count == 0:
        return {name: np.zeros((0, 3)) for name, _ in properties}, offset
    lengths, probe = [], offset
    for name, t in properties:  # the first row's list lengths
        if isinstance(t, str):
            probe += np.dtype(t).itemsize
        else:
            n = int(np.frombuffer(data, byte_order + t[0], 1, probe)[0])
            lengths.append(n)
            probe += np.dtype(t[0]).itemsize + n * np.dtype(t[1]).itemsize
    dtype = row_dtype(lengths)
    if offset + dtype.itemsize * count <= len(data):
        rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        list_names = [name for name, t in properties if not isinstance(t, str)]
        if all((rows[f"{n}__n"] == length).all() for n, length in zip(list_names, lengths)):
            return {name: rows[name] for name, _ in properties}, offset + dtype.itemsize * count
    parsed: dict[str, list] = {name: [] for name, _ in properties}  # mixed polygon sizes: row by row
    for _ in range(count):
        for name, t in properties:
            if isinstance(t, str):
                parsed[name].append(np.frombuffer(data, byte_order + t, 1, offset)[0])
                offset += np.dtype(t).itemsize
            else:
                n = int(np.frombuffer(data, byte_order + t[0], 1, offset)[0])
                offset += np.dtype(t[0]).itemsize
                parsed[name].append(np.frombuffer(data, byte_order + t[1], n, offset))
                offset += n * np.dtype(t[1]).itemsize
    return parsed, offset


def _ply_ascii_elements(path: Path, body: bytes, elements: list[dict]) -> dict[str, dict]:
    lines = body.decode("ascii", errors="replace").splitlines()
    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("comment")]
    values: dict[str, dict] = {}
    start = 0
    for element in elements:
        properties, count = element["properties"], element["count"]
        rows = lines[start:start + count]
        if len(rows) < count:
            raise ValueError(f"{path}: PLY element '{element['name']}' has {len(rows)} of {count} rows (truncated)")
        parsed: dict[str, list] = {name: [] for name, _ in properties}
        for k, line in enumerate(rows):
            tokens, i = line.split(), 0
            try:
                for name, t in properties:
                    if isinstance(t, str):
                        parsed[name].append(float(tokens[i]))
                        i += 1
                    else:
                        n = int(tokens[i])
                        parsed[name].append([int(v) for v in tokens[i + 1:i + 1 + n]])
                        if len(parsed[name][-1]) != n:
                            raise IndexError(f"list of {n} has {len(parsed[name][-1])} values")
                        i += 1 + n
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}: malformed PLY '{element['name']}' row {k} {line!r} ({exc})") from exc
        values[element["name"]] = {name: np.asarray(v) if isinstance(t, str) else v for (name, t), v
                                   in zip(properties, parsed.values())}
        start += count
    return values


# -- OFF ----------------------------------------------------------------------------------------

def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an Object File Format mesh (``OFF``, ``COFF``, ``NOFF``, ``CNOFF``, ``STOFF``).

    Colours, normals and texture coordinates after the positions are skipped; ``#`` comments
    are allowed; the counts may follow the keyword on the same line.

    Returns:
        ``(vertices, faces)``: float64 positions, 0-based int64 fan triangles.

    Raises:
        ValueError: naming the file and line, on a bad header, too few rows or a malformed row.

    Shape:
        -> vertices (V, 3), faces (F, 3).

    Example:
        >>> vertices, faces = read_off("mesh.off")
    """
    path = Path(path)
    rows = [(number, line.split("#")[0].split()) for number, line in enumerate(_read_text(path).splitlines(), 1)]
    rows = [(number, tokens) for number, tokens in rows if tokens]
    if not rows or not re.fullmatch(r"(ST)?C?N?4?OFF", rows[0][1][0]):
        raise ValueError(f"{path}: not an OFF file (the first line is not OFF/COFF/NOFF)")
    counts = rows[0][1][1:] or (rows[1][1] if len(rows) > 1 else [])
    data = rows[1:] if rows[0][1][1:] else rows[2:]
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{path}: OFF counts line must hold 'vertices faces edges' ({exc})") from exc
    if len(data) < num_vertices + num_faces:
        raise ValueError(f"{path}: OFF file declares {num_vertices} vertices and {num_faces} faces "
                         f"but holds {len(data)} rows (truncated)")
    vertices, polygons = [], []
    for number, tokens in data[:num_vertices]:
        try:
            vertices.append([float(t) for t in tokens[:3]])
            if len(tokens) < 3:
                raise ValueError("a vertex needs 3 coordinates")
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: malformed OFF vertex {' '.join(tokens)!r} ({exc})") from exc
    for number, tokens in data[num_vertices:num_vertices + num_faces]:
        try:
            n = int(tokens[0])
            polygons.append([int(t) for t in tokens[1:1 + n]])
            if n < 3 or len(polygons[-1]) != n:
                raise ValueError(f"a face needs at least 3 of its {n} indices")
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{path}:{number}: malformed OFF face {' '.join(tokens)!r} ({exc})") from exc
    return _checked_mesh(path, np.array(vertices, dtype=np.float64), _fan_triangulate(polygons))


# -- VRML ---------------------------------------------------------------------------------------

# ``\b`` keeps ``TextureCoordinate { point [...] }`` (2D texture coordinates) and ``texCoordIndex`` out
_WRL_POINTS = re.compile(r"\bCoordinate3?\s*\{[^\[\}]*?\bpoint\s*\[([^\]]*)\]")
_WRL_INDICES = re.compile(r"\bcoordIndex\s*\[([^\]]*)\]")


def read_wrl(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the ``IndexedFaceSet`` geometry of a VRML ``.wrl`` file (2.0 or 1.0), e.g. a BU-4DFE scan.

    Each ``coordIndex [...]`` (``-1``-separated polygons) indexes the nearest preceding
    ``Coordinate { point [...] }`` (VRML 2.0) or ``Coordinate3 { point [...] }`` (VRML 1.0); several
    shapes are concatenated into one mesh. Texture coordinates, normals and colours are ignored.
    ``DEF``/``USE`` reuse of a coordinate node is not followed.

    Returns:
        ``(vertices, faces)``: float64 positions, 0-based int64 fan triangles.

    Raises:
        ValueError: naming the file, when no coordinates are found, a list holds a non-number,
            the point count is not a multiple of 3 or an index is out of range.

    Shape:
        -> vertices (V, 3), faces (F, 3).

    Example:
        >>> vertices, faces = read_wrl("F001_Angry_000.wrl")
    """
    path = Path(path)
    text = re.sub(r"#[^\n]*", "", _read_text(path))  # comments, the '#VRML V2.0 utf8' line included
    events = sorted([(m.start(), "points", m.group(1)) for m in _WRL_POINTS.finditer(text)]
                    + [(m.start(), "indices", m.group(1)) for m in _WRL_INDICES.finditer(text)])
    if not any(kind == "points" for _, kind, _ in events):
        raise ValueError(f"{path}: no 'Coordinate {{ point [...] }}' node found; not a VRML mesh")
    blocks, triangles, offset, current = [], [], 0, None
    for position, kind, body in events:
        line = text.count("\n", 0, position) + 1
        try:
            numbers = np.array(body.replace(",", " ").split(), dtype=np.float64 if kind == "points" else np.int64)
        except ValueError as exc:
            raise ValueError(f"{path}:{line}: malformed VRML {kind} list ({exc})") from exc
        if kind == "points":
            if numbers.size % 3:
                raise ValueError(f"{path}:{line}: VRML point list holds {numbers.size} numbers, not x y z triples")
            current = (offset, numbers.size // 3)
            blocks.append(numbers.reshape(-1, 3))
            offset += numbers.size // 3
            continue
        if current is None:
            raise ValueError(f"{path}:{line}: coordIndex before any Coordinate node")
        if numbers.size and (numbers.max() >= current[1] or numbers.min() < -1):
            bad = numbers[(numbers >= current[1]) | (numbers < -1)][0]
            raise ValueError(f"{path}:{line}: coordIndex {bad} is out of range for {current[1]} points")
        triangles.append(_split_polygons(numbers) + current[0])
    faces = np.concatenate(triangles) if triangles else np.zeros((0, 3), dtype=np.int64)
    return _checked_mesh(path, np.concatenate(blocks), faces)


def _split_polygons(indices: np.ndarray) -> np.ndarray:
    """Fan triangles of a ``-1``-separated index list (the last ``-1`` optional). Shape: -> (F, 3)."""
    ends = np.flatnonzero(indices == -1)
    if len(ends) and len(indices) and (ends == np.arange(3, 4 * len(ends), 4)).all() and len(indices) == 4 * len(ends):
        return indices.reshape(-1, 4)[:, :3].copy()  # fast path: all triangles, each closed by -1
    polygons, start = [], 0
    for end in list(ends) + [len(indices)]:
        if end > start:
            polygons.append(indices[start:end].tolist())
        start = end + 1
    return _fan_triangulate(polygons)


# -- numpy --------------------------------------------------------------------------------------

def read_npy_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read points from ``.npy`` (a ``(V, 3)`` array; no faces) or a mesh from ``.npz`` (``vertices``,
    optional ``faces``).

    Returns:
        ``(vertices, faces)``: float64 positions; 0-based int64 triangles (``(0, 3)`` without faces).

    Raises:
        ValueError: naming the file, when it cannot be loaded or holds the wrong shapes or keys.

    Shape:
        -> vertices (V, 3), faces (F, 3).

    Example:
        >>> vertices, faces = read_npy_mesh("points.npy")
    """
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read numpy file ({exc})") from exc
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "vertices" not in loaded.files:
                raise ValueError(f"{path}: .npz mesh needs a 'vertices' array, has {loaded.files}")
            vertices = loaded["vertices"]
            faces = loaded["faces"] if "faces" in loaded.files else np.zeros((0, 3), dtype=np.int64)
    else:
        vertices, faces = loaded, np.zeros((0, 3), dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.issubdtype(vertices.dtype, np.number):
        raise ValueError(f"{path}: vertices must be a numeric (V, 3) array, got {vertices.dtype} {vertices.shape}")
    if faces.size and (faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer)):
        raise ValueError(f"{path}: faces must be an integer (F, 3) array, got {faces.dtype} {faces.shape}")
    return _checked_mesh(path, vertices, faces)


MESH_READERS = {".obj": read_obj, ".ply": read_ply, ".off": read_off, ".wrl": read_wrl, ".vrml": read_wrl,
                ".npy": read_npy_mesh, ".npz": read_npy_mesh}


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh or scan by its suffix (``.obj``, ``.ply``, ``.off``, ``.wrl``, ``.npy``, ``.npz``).

    Returns:
        ``(vertices, faces)``: float64 (V, 3) positions and 0-based int64 (F, 3) triangles.

    Raises:
        ValueError: naming the file, for an unknown suffix or a malformed file.

    Example:
        >>> vertices, faces = read_mesh("scan.wrl")
    """
    path = Path(path)
    reader = MESH_READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown mesh suffix {path.suffix!r}; supported: {', '.join(MESH_READERS)}")
    return reader(path)
