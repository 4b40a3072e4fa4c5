"""Benchmark protocols on real data: NoW, AFLW2000-3D, BU-4DFE, MICC Florence, and folder-vs-folder.

None of these datasets ships with diffface (each needs registration with its owner; see the README's
"Evaluation datasets"). This module reads their files and fixes each protocol's conventions:

- **NoW** (Sanyal et al., CVPR 2019): scan-to-mesh distance in mm. The predicted mesh is aligned to
  the scan by the similarity that maps its 7 landmarks onto the scan's (optionally refined by rigid
  ICP, as the official code does), then every scan point's distance to the closest point on the
  predicted *surface* is measured; reported as median / mean / std over all points of all scans.
  Scan landmarks come as MeshLab ``.pp`` files (:func:`read_pp`), scans as ``.obj``.
- **AFLW2000-3D** (Zhu et al., 3DDFA): 68-landmark NME in the image, normalised by the ground-truth
  bounding box size ``sqrt(w·h)`` (:func:`aflw2000_nme`); ``.mat`` files hold ``pt3d_68`` (3, 68).
- **BU-4DFE** (Yin et al.): ``.wrl`` scans with 3D landmarks for initialisation, split by subject
  (``F001``, ``M023``, ...) into test and validation deterministically from a seed
  (:class:`Bu4dfeProtocol`).
- **MICC Florence** (Bagdanov et al.): one neutral scan per subject; predictions are identity-only
  (``α_exp = 0``, :func:`neutral_shape`); errors (or shapes) are averaged over 23 frames per
  subject drawn with a seed (:func:`micc_frame_average`), with and without scale in the alignment.
- **Folders**: predicted meshes of any method paired with ground-truth meshes by file stem
  (:func:`pair_folders`).

Landmark files of scans use one simple format: ``NAME_landmarks.npy`` or ``NAME_landmarks.txt``
(``(N, 3)``, one point a row) beside ``NAME.<suffix>`` (:func:`read_landmarks_3d`; ``.pp`` too).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..alignment import Similarity, procrustes
from ..mesh_io import MESH_READERS, read_mesh
from .closest_point import check_mesh, check_points, closest_points_on_mesh

MESH_SUFFIXES = tuple(MESH_READERS)
LANDMARK_SUFFIX = "_landmarks"

# -- landmarks of scans ---------------------------------------------------------------------------


def read_pp(path: str | Path) -> np.ndarray:
    """Read a MeshLab picked-points ``.pp`` file (the NoW scans' 7 landmarks).

    Points appear in file order; points with ``active="0"`` are kept (NoW counts on all 7).

    Returns:
        float64 (N, 3).

    Raises:
        ValueError: naming the file, if it is not XML, holds no ``<point>`` or a bad coordinate.

    Example:
        >>> scan_landmarks = read_pp("NoW_Dataset/scans_lmks_onlypp/FaMoS_180424_03335_TA/natural_head_rotation.000001_picked_points.pp")
    """
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as exc:
        raise ValueError(f"{path}: cannot read picked points ({exc})") from exc
    points = []
    for point in root.iter("point"):
        try:
            points.append([float(point.attrib[axis]) for axis in "xyz"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: malformed <point> {point.attrib} ({exc!r})") from exc
    if not points:
        raise ValueError(f"{path}: no <point> elements; not a MeshLab picked-points file")
    landmarks = np.array(points, dtype=np.float64)
    if not np.isfinite(landmarks).all():
        raise ValueError(f"{path}: landmarks contain NaN or infinite values")
    return landmarks


def write_pp(path: str | Path, points: np.ndarray) -> Path:
    """Write points as a MeshLab picked-points ``.pp`` file (names ``"0"``, ``"1"``, ...)."""
    path = Path(path)
    rows = "".join(f' <point x="{x!r}" y="{y!r}" z="{z!r}" active="1" name="{i}"/>\n'
                   for i, (x, y, z) in enumerate(np.asarray(points, dtype=np.float64).tolist()))
    path.write_text(f"<!DOCTYPE PickedPoints>\n<PickedPoints>\n{rows}</PickedPoints>\n", encoding="utf-8")
    return path


def read_landmarks_3d(path: str | Path, allow_nan: bool = False) -> np.ndarray:
    """3D landmarks from ``.npy``, ``.txt`` (whitespace or comma separated, ``#`` comments) or ``.pp``.

    Args:
        path: the file.
        allow_nan: accept NaN rows (undefined landmarks, as in ``diffface synth``'s ``NAME_landmarks.npy``).

    Returns:
        float64 (N, 3).

    Raises:
        ValueError: naming the file, when it cannot be read or is not (N, 3) finite numbers.
    """
    path = Path(path)
    if path.suffix.lower() == ".pp":
        return read_pp(path)
    try:
        if path.suffix.lower() == ".npy":
            points = np.load(path, allow_pickle=False)
        else:
            text = path.read_text(encoding="utf-8").replace(",", " ")
            points = np.array([line.split("#")[0].split() for line in text.splitlines()
                               if line.split("#")[0].strip()], dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read 3D landmarks ({exc})") from exc
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3 or not np.issubdtype(points.dtype, np.number):
        raise ValueError(f"{path}: 3D landmarks must be a numeric (N, 3) array, got {points.dtype} {points.shape}")
    points = points.astype(np.float64)
    if np.isinf(points).any() or (not allow_nan and np.isnan(points).any()):
        raise ValueError(f"{path}: landmarks contain NaN or infinite values")
    return points


def landmarks_path_for(mesh_path: str | Path) -> Path | None:
    """``NAME_landmarks.npy`` or ``NAME_landmarks.txt`` beside ``NAME.<suffix>``, whichever exists."""
    mesh_path = Path(mesh_path)
    for suffix in (".npy", ".txt"):
        candidate = mesh_path.with_name(mesh_path.stem + LANDMARK_SUFFIX + suffix)
        if candidate.is_file():
            return candidate
    return None


# -- NoW ------------------------------------------------------------------------------------------

# The 7 NoW landmarks as iBUG-68 indices (0-based), in the order of the NoW .pp files: the outer and
# inner corners of the eyes (image left to right), the nose tip, the mouth corners.
NOW_IBUG_INDICES = (36, 39, 42, 45, 33, 48, 54)


@dataclass(frozen=True)
class NowErrors:
    """Result of :func:`now_scan_to_mesh_errors`.

    Shape:
        distances_mm: (N,) per scan point; aligned_vertices: (V, 3) the prediction in the scan's frame.
    """

    distances_mm: np.ndarray
    aligned_vertices: np.ndarray
    similarity: Similarity

    def summary(self) -> dict[str, float]:
        return error_summary(self.distances_mm)


def error_summary(distances_mm: np.ndarray | list[np.ndarray]) -> dict[str, float]:
    """``{"median_mm", "mean_mm", "std_mm", "points"}`` over all distances (a list is concatenated, as
    NoW pools the points of all scans)."""
    if isinstance(distances_mm, (list, tuple)):
        distances_mm = np.concatenate([np.ravel(d) for d in distances_mm]) if distances_mm else np.zeros(0)
    distances_mm = np.asarray(distances_mm, dtype=np.float64).ravel()
    if distances_mm.size == 0:
        raise ValueError("no distances to summarise")
    return {"median_mm": float(np.median(distances_mm)), "mean_mm": float(distances_mm.mean()),
            "std_mm": float(distances_mm.std()), "points": int(distances_mm.size)}


def now_scan_to_mesh_errors(pred_vertices: np.ndarray, pred_faces: np.ndarray, pred_landmarks7: np.ndarray,
                            scan_points: np.ndarray, scan_landmarks7: np.ndarray,
                            rigid_refinement_iterations: int = 0) -> NowErrors:
    """NoW scan-to-mesh distances: align the prediction by its 7 landmarks, measure from every scan point.

    The similarity (rotation, translation, scale; Umeyama) mapping ``pred_landmarks7`` onto
    ``scan_landmarks7`` is applied to the predicted mesh; with ``rigid_refinement_iterations > 0``
    it is then refined by rigid ICP (scan points -> closest points on the mesh), as the official
    NoW code does. Distances are exact point-to-surface distances
    (:func:`diffface.evaluation.closest_point.closest_points_on_mesh`).

    Args:
        pred_vertices, pred_faces: the predicted mesh (millimetres).
        pred_landmarks7: the 7 landmarks on the prediction (e.g. ``vertices[model.landmark_indices[NOW_IBUG_INDICES]]``).
        scan_points: the scan's vertices (millimetres; NoW scans are).
        scan_landmarks7: the scan's 7 landmarks (:func:`read_pp`), in the same order.
        rigid_refinement_iterations: rounds of rigid ICP after the landmark similarity.

    Returns:
        :class:`NowErrors` (``.summary()``: median / mean / std in mm).

    Shape:
        pred_vertices: (V, 3); pred_faces: (F, 3); pred_landmarks7, scan_landmarks7: (7, 3);
        scan_points: (N, 3).

    Example:
        >>> errors = now_scan_to_mesh_errors(vertices, faces, vertices[lmk7], scan, read_pp("scan.pp"))
        >>> errors.summary()["median_mm"]
    """

    pred_vertices, pred_faces = check_mesh(pred_vertices, pred_faces, "predicted mesh")
    scan_points = check_points(scan_points, "scan_points")
    pred_landmarks7, scan_landmarks7 = check_points(pred_landmarks7, "pred_landmarks7"), check_points(scan_landmarks7, "scan_landmarks7")
    if pred_landmarks7.shape != scan_landmarks7.shape or len(pred_landmarks7) < 3:
        raise ValueError(f"pred_landmarks7 {pred_landmarks7.shape} and scan_landmarks7 {scan_landmarks7.shape} "
                         "must be the same (N >= 3, 3) shape (NoW: 7 landmarks)")
    similarity = procrustes(torch.from_numpy(pred_landmarks7)[None], torch.from_numpy(scan_landmarks7)[None],
                            with_scale=True)
    aligned = _apply(similarity, pred_vertices)
    found = closest_points_on_mesh(scan_points, aligned, pred_faces)
    for _ in range(rigid_refinement_iterations):
        step = procrustes(torch.from_numpy(found.points)[None], torch.from_numpy(scan_points)[None])
        aligned = _apply(step, aligned)
        similarity = _compose(step, similarity)
        found = closest_points_on_mesh(scan_points, aligned, pred_faces)
    return NowErrors(distances_mm=found.distances, aligned_vertices=aligned, similarity=similarity)


def _apply(similarity: Similarity, points: np.ndarray) -> np.ndarray:
    return similarity.apply(torch.from_numpy(np.asarray(points, dtype=np.float64))[None])[0].numpy()


def _compose(outer: Similarity, inner: Similarity) -> Similarity:
    """``outer ∘ inner``."""
    return Similarity(rotation=outer.rotation @ inner.rotation,
                      translation=outer.scale[:, None] * (inner.translation[:, None] @ outer.rotation.transpose(1, 2))[:, 0]
                      + outer.translation,
                      scale=outer.scale * inner.scale)


def read_now_scan(path: str | Path) -> np.ndarray:
    """The vertices of a NoW scan (``.obj``; any :func:`~diffface.mesh_io.read_mesh` format). Shape: -> (N, 3)."""
    return read_mesh(path)[0]


# -- AFLW2000-3D ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Aflw2000Annotation:
    """One AFLW2000-3D ``.mat`` file.

    Shape:
        landmarks: (68, 3) ``pt3d_68`` transposed (x, y in image pixels as stored, z depth);
        yaw_deg: the ``pose_para`` yaw in degrees (NaN when absent).
    """

    name: str
    landmarks: np.ndarray
    yaw_deg: float


def read_aflw2000_mat(path: str | Path) -> Aflw2000Annotation:
    """Read an AFLW2000-3D annotation (``image00002.mat``: ``pt3d_68`` (3, 68), ``pose_para``).

    Raises:
        ValueError: naming the file, if it cannot be loaded or lacks a (3, 68) ``pt3d_68``.

    Example:
        >>> gt = read_aflw2000_mat("AFLW2000/image00002.mat").landmarks[:, :2]   # (68, 2)
    """
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        mat = loadmat(path)
    except (OSError, ValueError, TypeError, MatReadError) as exc:
        raise ValueError(f"{path}: cannot read .mat file ({exc})") from exc
    if "pt3d_68" not in mat:
        raise ValueError(f"{path}: no 'pt3d_68' array; keys: {sorted(k for k in mat if not k.startswith('__'))}")
    landmarks = np.asarray(mat["pt3d_68"], dtype=np.float64)
    if landmarks.shape != (3, 68):
        raise ValueError(f"{path}: 'pt3d_68' must be (3, 68), got {landmarks.shape}")
    yaw = float("nan")
    if "pose_para" in mat and np.asarray(mat["pose_para"]).size >= 2:
        yaw = math.degrees(float(np.asarray(mat["pose_para"], dtype=np.float64).ravel()[1]))
    return Aflw2000Annotation(name=path.stem, landmarks=landmarks.T.copy(), yaw_deg=yaw)


def aflw2000_nme(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-image 68-landmark NME normalised by the ground-truth box size ``sqrt(w·h)`` (3DDFA's protocol).

    ``NME = mean_k ||pred_k - gt_k|| / sqrt(w·h)`` with ``w, h`` the extent of the ground-truth
    landmarks. Multiply by 100 for the usual percentages.

    Shape:
        pred, gt: (N, 68, 2) -> (N,).

    Example:
        >>> aflw2000_nme(np.zeros((1, 68, 2)), gt[None]).mean() * 100   # NME in %
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if gt.ndim != 3 or gt.shape[1:] != (68, 2) or pred.shape != gt.shape:
        raise ValueError(f"pred and gt must both be (N, 68, 2), got {pred.shape} and {gt.shape}")
    extent = gt.max(1) - gt.min(1)
    size = np.sqrt(extent[:, 0] * extent[:, 1])
    if (size <= 0).any():
        raise ValueError(f"degenerate ground-truth boxes (zero width or height) at {np.flatnonzero(size <= 0).tolist()}")
    return np.linalg.norm(pred - gt, axis=-1).mean(1) / size


AFLW2000_YAW_BINS_DEG = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))


def aflw2000_nme_by_yaw(nme: np.ndarray, yaw_deg: np.ndarray) -> dict[str, float]:
    """Mean NME per |yaw| bin ([0, 30], (30, 60], (60, 90]) and their balanced mean, as 3DDFA reports.

    Empty bins give NaN (and are left out of the balanced mean).
    """
    nme, yaw = np.asarray(nme, dtype=np.float64), np.abs(np.asarray(yaw_deg, dtype=np.float64))
    out = {}
    for low, high in AFLW2000_YAW_BINS_DEG:
        inside = (yaw <= high) & ((yaw > low) if low > 0 else (yaw >= low))
        out[f"yaw_{low:g}_{high:g}"] = float(nme[inside].mean()) if inside.any() else float("nan")
    bins = [v for v in out.values() if not math.isnan(v)]
    out["balanced"] = float(np.mean(bins)) if bins else float("nan")
    out["all"] = float(nme.mean()) if nme.size else float("nan")
    return out


# -- BU-4DFE --------------------------------------------------------------------------------------

_SUBJECT = re.compile(r"(?<![A-Za-z0-9])([FM]\d{3})(?![0-9])")


@dataclass(frozen=True)
class ScanSample:
    """A scan, its landmarks for initialisation (None when absent) and its subject."""

    name: str
    scan: Path
    landmarks: Path | None
    subject: str


def subject_of(relative_path: str | Path) -> str:
    """The BU-4DFE subject id (``F001``, ``M023``) in a path (a folder or the file name's prefix)."""
    match = _SUBJECT.search(Path(relative_path).as_posix())
    if match is None:
        raise ValueError(f"{relative_path}: no BU-4DFE subject id (F### or M###) in the path")
    return match.group(1)


def split_subjects(subjects: list[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """A deterministic ``(test, val)`` split of subject ids: sorted, shuffled with ``seed``, the first
    ``round(val_fraction · n)`` (at least 1 when ``0 < val_fraction`` and n > 1) are validation."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = sorted(set(subjects))
    order = np.random.default_rng(seed).permutation(len(unique))
    num_val = int(round(val_fraction * len(unique)))
    if val_fraction > 0 and len(unique) > 1:
        num_val = min(max(num_val, 1), len(unique) - 1)
    val = sorted(unique[i] for i in order[:num_val])
    test = sorted(unique[i] for i in order[num_val:])
    return test, val


@dataclass(frozen=True)
class Bu4dfeProtocol:
    """BU-4DFE scans with landmarks, split into test and validation by subject.

    Expected layout (the dataset's own, ``ROOT/F001/Angry/000.wrl``, or flat ``ROOT/F001_Angry_000.wrl``);
    landmarks for initialisation are ``000_landmarks.npy`` or ``.txt`` (N, 3) beside each scan.
    Sample names are the relative path without suffix, ``/`` replaced by ``_`` (``F001_Angry_000``).

    Example:
        >>> protocol = Bu4dfeProtocol.from_folder("BU4DFE", seed=0)
        >>> [s.name for s in protocol.split("test")][:1]
        ['F001_Angry_000']
    """

    root: Path
    samples: tuple[ScanSample, ...]
    test_subjects: tuple[str, ...]
    val_subjects: tuple[str, ...]
    seed: int = 0

    @classmethod
    def from_folder(cls, root: str | Path, seed: int = 0, val_fraction: float = 0.2,
                    suffixes: tuple[str, ...] = (".wrl",), require_landmarks: bool = True) -> "Bu4dfeProtocol":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: BU-4DFE folder not found")
        samples = []
        for scan in sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
            relative = scan.relative_to(root)
            landmarks = landmarks_path_for(scan)
            if landmarks is None and require_landmarks:
                raise ValueError(f"{scan}: no landmarks ({scan.stem}{LANDMARK_SUFFIX}.npy or .txt) beside the scan")
            name = relative.with_suffix("").as_posix().replace("/", "_")
            samples.append(ScanSample(name, scan, landmarks, subject_of(relative)))
        if not samples:
            raise ValueError(f"{root}: no scans ({', '.join(suffixes)}) found")
        test, val = split_subjects([s.subject for s in samples], val_fraction, seed)
        return cls(root, tuple(samples), tuple(test), tuple(val), seed)

    def split(self, which: str) -> list[ScanSample]:
        """The samples of ``"test"``, ``"val"`` or ``"all"``."""
        if which == "all":
            return list(self.samples)
        chosen = {"test": self.test_subjects, "val": self.val_subjects}.get(which)
        if chosen is None:
            raise ValueError(f"split must be 'test', 'val' or 'all', got {which!r}")
        return [s for s in self.samples if s.subject in chosen]


# -- MICC Florence --------------------------------------------------------------------------------

MICC_FRAMES_PER_SUBJECT = 23


@dataclass(frozen=True)
class MiccProtocol:
    """MICC Florence: one neutral scan per subject (``ROOT/subject_NN/...``).

    The neutral scan of a subject is the first mesh file (sorted) under its folder whose path
    contains ``frontal1`` (the dataset's ``Model/frontal1/obj/*.obj``), else the first mesh file.
    The scans are neutral, so predictions are compared with ``α_exp = 0`` (:func:`neutral_shape`);
    per-frame predictions are averaged over 23 frames per subject (:func:`micc_frame_average`), and
    the protocol is reported with and without scale in the alignment.
    """

    root: Path
    samples: tuple[ScanSample, ...] = field(default=())

    @classmethod
    def from_folder(cls, root: str | Path) -> "MiccProtocol":
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: MICC Florence folder not found")
        samples = []
        for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            meshes = sorted(p for p in subject_dir.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES
                            and not p.stem.endswith(LANDMARK_SUFFIX))
            if not meshes:
                continue
            frontal = [p for p in meshes if "frontal1" in p.relative_to(subject_dir).as_posix()]
            scan = (frontal or meshes)[0]
            samples.append(ScanSample(subject_dir.name, scan, landmarks_path_for(scan), subject_dir.name))
        if not samples:
            raise ValueError(f"{root}: no subject folders with a mesh found")
        return cls(root, tuple(samples))


def micc_frame_indices(num_frames: int, subject: str, seed: int = 0,
                       count: int = MICC_FRAMES_PER_SUBJECT) -> np.ndarray:
    """``count`` distinct frame indices of ``range(num_frames)``, sorted; a pure function of
    ``(subject, seed)`` (the subject's name is hashed with CRC-32, so the draw does not depend on
    which other subjects are evaluated)."""
    if num_frames < count:
        raise ValueError(f"{subject}: {num_frames} frames, fewer than the {count} the MICC protocol averages over")
    rng = np.random.default_rng([seed, zlib.crc32(subject.encode("utf-8"))])
    return np.sort(rng.choice(num_frames, size=count, replace=False))


def micc_frame_average(per_frame: dict[str, np.ndarray], seed: int = 0,
                       count: int = MICC_FRAMES_PER_SUBJECT) -> dict[str, np.ndarray]:
    """Average per-frame values over ``count`` frames drawn per subject with ``seed``.

    Args:
        per_frame: subject -> per-frame values: errors ``(T,)`` or shapes ``(T, V, 3)`` (any ``(T, ...)``).

    Returns:
        subject -> the mean over the drawn frames (``()`` or ``(V, 3)``).
    """
    out = {}
    for subject, values in per_frame.items():
        values = np.asarray(values, dtype=np.float64)
        out[subject] = values[micc_frame_indices(len(values), subject, seed, count)].mean(0)
    return out


def neutral_shape(model, alpha_id: torch.Tensor) -> torch.Tensor:
    """The model's shape with ``α_exp = 0`` (MICC's scans are neutral). Shape: (B, K_id) -> (B, V, 3)."""
    return model.shape(alpha_id, alpha_id.new_zeros(alpha_id.shape[0], model.exp_dims))


# -- folder of predictions vs folder of ground truth -----------------------------------------------

@dataclass(frozen=True)
class FolderPairs:
    """Predicted and ground-truth meshes matched by stem.

    ``pairs``: ``(name, prediction, ground truth)``; ``missing``: ground-truth names without a
    prediction; ``unmatched``: predictions without ground truth.
    """

    pairs: tuple[tuple[str, Path, Path], ...]
    missing: tuple[str, ...]
    unmatched: tuple[str, ...]


def _meshes_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes or path.stem.endswith(LANDMARK_SUFFIX):
            continue
        if path.stem in found:
            raise ValueError(f"{folder}: two meshes named {path.stem!r}: {found[path.stem].name} and {path.name}")
        found[path.stem] = path
    return found


def pair_folders(pred_dir: str | Path, gt_dir: str | Path,
                 suffixes: tuple[str, ...] = MESH_SUFFIXES) -> FolderPairs:
    """Pair ``pred_dir/NAME.<any mesh suffix>`` with ``gt_dir/NAME.<any mesh suffix>``
    (``NAME_landmarks.*`` files are not meshes). Raises ``ValueError`` when nothing pairs."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    predictions, truths = _meshes_by_stem(pred_dir, suffixes), _meshes_by_stem(gt_dir, suffixes)
    pairs = tuple((name, predictions[name], truths[name]) for name in sorted(truths) if name in predictions)
    if not pairs:
        raise ValueError(f"no predicted mesh in {pred_dir} has the name of a ground-truth mesh in {gt_dir}")
    return FolderPairs(pairs, tuple(sorted(set(truths) - set(predictions))),
                       tuple(sorted(set(predictions) - set(truths))))
