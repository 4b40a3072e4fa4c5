"""Evaluate folders of reconstructed meshes against ground-truth meshes: ``report.json`` and ``ced.png``.

Pairing is by name: ``face_0001.obj`` (ground truth, e.g. ``diffface synth``'s ``S/meshes``) matches
``face_0001.obj`` or ``face_0001.png.obj`` (``diffface fit --meshes obj`` names meshes after the
image). A folder holding a ``meshes/`` subfolder (a fit or synth output) is read from there.
Every pair is aligned twice: by ICP onto the scan surface (:func:`~diffface.evaluation.icp.icp`,
initialised from landmarks when both sides have them) and by the landmarks alone
(:func:`~diffface.evaluation.icp.landmark_alignment`), when both sides have them. Landmarks: the
ground truth's ``NAME_landmarks.npy`` (68, 3) beside its mesh (NaN rows: undefined); the
prediction's ``NAME_landmarks.npy`` beside it, or 68 vertex indices into every predicted mesh
(``landmark_indices``; -1: undefined). An unreadable or failing prediction is recorded with its reason
and counts as a failure (error ``inf``) in the CED and AUC; evaluation goes on.

Names must pair: a ground truth without a prediction, or a prediction without a ground truth, is an error
unless ``allow_missing`` (then a missing prediction counts as a failure); nothing pairing at all, or a
folder without meshes, is always an error. Predictions need not be mesh files: a :class:`PredictionSet`
maps names to objects that build their mesh on demand (:class:`PredictedMesh`, e.g. a ``diffface fit``
result rebuilt from its parameters and model).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np

from ..atomic_io import write_text_atomic
from ..landmarks.images import IMAGE_SUFFIXES
from .closest_point import TriangleMeshIndex, check_mesh
from .icp import AlignmentResult, icp, landmark_alignment
from .metrics import auc, error_mm_stats, normalized_distance_d
from .plots import plot_ced

__all__ = ["MESH_SUFFIXES", "PredictedMesh", "PredictionSet", "mesh_key", "list_meshes", "read_landmark_indices",
           "evaluate_methods", "summarise"]

FORMAT = "diffface-evaluation/1"
MESH_SUFFIXES = (".obj", ".ply", ".off", ".wrl")
ALIGNMENTS = ("icp", "landmarks")


class PredictedMesh(Protocol):
    """A prediction that builds its mesh when evaluated (e.g. :class:`diffface.fitting.job.results.FittedMesh`)."""

    name: str

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(vertices (V, 3), triangles (F, 3), landmarks (L, 3) or None)``; raises ``ValueError`` naming
        the source when it cannot."""


@dataclass(frozen=True)
class PredictionSet:
    """One method's predictions: where they come from and, by name, a mesh file or a :class:`PredictedMesh`."""

    source: Path
    meshes: Mapping[str, Path | PredictedMesh]


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:  # read_mesh (any supported format) where mesh_io has it, else OBJ only
        from ..mesh_io import read_mesh
    except ImportError:
        from ..mesh_io import read_obj as read_mesh
    return read_mesh(path)


def mesh_key(path: str | Path) -> str:
    """The pairing name of a mesh file: ``face_0001.png.obj`` and ``face_0001.obj`` -> ``face_0001``."""
    name = Path(path).name
    for suffixes in (MESH_SUFFIXES, IMAGE_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
    return name


def list_meshes(folder: str | Path) -> dict[str, Path]:
    """``{key: mesh path}`` of a folder's meshes (its ``meshes/`` subfolder if it has one), subfolders included
    (a grouped fit writes ``meshes/<subject>/<frame>.obj``); keys must be unique across them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if (folder / "meshes").is_dir():
        folder = folder / "meshes"
    meshes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in MESH_SUFFIXES and not path.name.startswith("."):
            key = mesh_key(path)
            if key in meshes:
                raise ValueError(f"{folder}: two meshes pair as {key!r}: {meshes[key].relative_to(folder)} and "
                                 f"{path.relative_to(folder)}")
            meshes[key] = path
    return meshes


def read_landmark_indices(spec: str | Path) -> np.ndarray:
    """68 landmark vertex indices (-1: undefined) from ``builtin`` (the built-in model's), a ``.npy``
    file or a text file of integers. Shape: -> (L,) int64."""
    if str(spec) == "builtin":
        from ..morphable_model import load_morphable_model
        return load_morphable_model("builtin").landmark_indices.numpy().astype(np.int64)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such landmark index file")
    values = np.load(path) if path.suffix == ".npy" else np.array(path.read_text().replace(",", " ").split(), float)
    values = np.asarray(values).ravel()
    if values.size < 3 or not np.all(values == np.round(values)):
        raise ValueError(f"{path}: expected at least 3 integer vertex indices, got {values.size} values")
    return values.astype(np.int64)


def _landmarks_beside(mesh_path: Path) -> Path | None:
    for stem in {mesh_path.stem, mesh_key(mesh_path)}:
        candidate = mesh_path.with_name(f"{stem}_landmarks.npy")
        if candidate.is_file():
            return candidate
    return None


def _prediction_landmarks(vertices: np.ndarray, mesh_path: Path, indices: np.ndarray | None) -> np.ndarray | None:
    if indices is not None:
        if indices.max() >= len(vertices):
            raise ValueError(f"landmark index {indices.max()} is outside the {len(vertices)} predicted vertices")
        picked = vertices[np.clip(indices, 0, None)].copy()
        picked[indices < 0] = np.nan
        return picked
    beside = _landmarks_beside(mesh_path)
    return None if beside is None else np.load(beside)


def _sample_figures(result: AlignmentResult) -> dict:
    rotation_scale = float(result.similarity.scale[0])
    return {"d": float(normalized_distance_d(result.aligned, result.projections)),
            **error_mm_stats(result.distances), "scale": rotation_scale,
            "iterations": result.iterations, "converged": bool(result.converged)}


def _evaluate_pair(prediction: Path | PredictedMesh, gt_index: TriangleMeshIndex, gt_landmarks: np.ndarray | None,
                   with_scale: bool, landmark_indices: np.ndarray | None) -> dict:
    if isinstance(prediction, Path):
        vertices, faces = _read_mesh(prediction)
        vertices, _ = check_mesh(vertices, faces, str(prediction))
        pred_landmarks = _prediction_landmarks(vertices, prediction, landmark_indices)
    else:
        vertices, faces, built_landmarks = prediction.load()
        vertices, _ = check_mesh(vertices, faces, prediction.name)
        pred_landmarks = (built_landmarks if landmark_indices is None
                          else _prediction_landmarks(vertices, Path(prediction.name), landmark_indices))
    pred_path = prediction if isinstance(prediction, Path) else Path(prediction.name)
    have_landmarks = pred_landmarks is not None and gt_landmarks is not None
    if have_landmarks and np.shape(pred_landmarks) != np.shape(gt_landmarks):
        raise ValueError(f"{pred_path}: {np.shape(pred_landmarks)} landmarks against {np.shape(gt_landmarks)} "
                         f"on the ground truth")
    init = (pred_landmarks, gt_landmarks) if have_landmarks else None
    record = {"icp": _sample_figures(icp(vertices, None, None, with_scale, init=init, index=gt_index))}
    if have_landmarks:
        record["landmarks"] = _sample_figures(
            landmark_alignment(vertices, pred_landmarks, gt_landmarks, None, None, with_scale, index=gt_index))
    return record


def summarise(records: list[dict], alignment: str = "icp", max_error: float = 1.0) -> dict | None:
    """Figures of one method and alignment over its sample records (failures count as ``inf`` in the AUC).

    ``median``/``mean``: of the per-sample d; ``mean_mm``: mean of the per-sample mean errors;
    ``median_mm``: median of the per-sample median errors; ``rms_mm``: RMS of the per-sample RMS errors.
    """
    done = [r[alignment] for r in records if r.get("status") == "ok" and alignment in r]
    if alignment != "icp" and not done:
        return None
    failed = sum(r.get("status") != "ok" for r in records)
    d = np.array([r["d"] for r in done])
    errors = np.concatenate([d, np.full(failed, np.inf)])
    figure = (lambda f: f(d) if len(d) else None)
    return {"n": len(done), "n_failed": failed,
            "auc": auc(errors, max_error) if len(errors) else None,
            "median": figure(lambda x: float(np.median(x))), "mean": figure(lambda x: float(x.mean())),
            "mean_mm": figure(lambda _: float(np.mean([r["mean_mm"] for r in done]))),
            "median_mm": figure(lambda _: float(np.median([r["median_mm"] for r in done]))),
            "rms_mm": figure(lambda _: float(np.sqrt(np.mean([r["rms_mm"] ** 2 for r in done]))))}


def prediction_set(source: str | Path | PredictionSet) -> PredictionSet:
    """A method's predictions: a :class:`PredictionSet` as is, a folder's meshes (:func:`list_meshes`) paired
    by :func:`mesh_key`.

    Raises:
        ValueError: naming the folder, when it holds no mesh.
    """
    if isinstance(source, PredictionSet):
        meshes: dict[str, Path | PredictedMesh] = {}
        for name, mesh in source.meshes.items():
            key = mesh_key(Path(name).name)
            if key in meshes:
                raise ValueError(f"{source.source}: two predictions pair as {key!r}")
            meshes[key] = mesh
        return PredictionSet(Path(source.source), meshes)
    folder = Path(source)
    meshes = list_meshes(folder)
    if not meshes:
        raise ValueError(f"{folder}: no predicted meshes ({', '.join(MESH_SUFFIXES)}) here or in {folder}/meshes"
                         + ("; a fit folder's results/ are evaluated as PredictionSet(folder, fitted_meshes(folder, "
                            "model)) (diffface.fitting.job.results)" if (folder / "results").is_dir() else ""))
    return PredictionSet(folder, meshes)


def check_pairing(predictions: PredictionSet, gt_keys, gt_dir: str | Path, allow_missing: bool = False) -> None:
    """Raise ``ValueError`` when nothing pairs, or (unless ``allow_missing``) when a name is unmatched."""
    gt_keys, pred_keys = set(gt_keys), set(predictions.meshes)
    if not gt_keys:
        raise ValueError(f"{gt_dir}: no ground-truth meshes ({', '.join(MESH_SUFFIXES)})")
    missing, unpaired = sorted(gt_keys - pred_keys), sorted(pred_keys - gt_keys)
    examples = lambda keys: ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")  # noqa: E731
    if not gt_keys & pred_keys:
        raise ValueError(f"{predictions.source}: none of its {len(pred_keys)} predictions ({examples(unpaired)}) "
                         f"pairs by name with the {len(gt_keys)} ground-truth meshes of {gt_dir} "
                         f"({examples(missing)})")
    if allow_missing or not (missing or unpaired):
        return
    problems = []
    if missing:
        problems.append(f"no prediction for {len(missing)} of the {len(gt_keys)} ground-truth meshes "
                        f"({examples(missing)})")
    if unpaired:
        problems.append(f"{len(unpaired)} predictions without a ground truth in {gt_dir} ({examples(unpaired)})")
    raise ValueError(f"{predictions.source}: {'; '.join(problems)}; pass --allow-missing (allow_missing=True) "
                     f"to evaluate the pairs and count the missing predictions as failures")


def evaluate_methods(methods: dict[str, str | Path | PredictionSet], gt_dir: str | Path, out_dir: str | Path,
                     with_scale: bool = False, landmark_indices: np.ndarray | None = None,
                     max_error: float = 1.0, progress: Callable[[int], None] | None = None,
                     allow_missing: bool = False) -> dict:
    """Evaluate every method's predicted meshes against the ground truth; write ``report.json`` and ``ced.png``.

    Args:
        methods: method name -> folder of predicted meshes, or a :class:`PredictionSet`.
        gt_dir: folder of ground-truth meshes (and ``NAME_landmarks.npy``).
        out_dir: where the report and plot go (created).
        with_scale: align with a similarity (else rigidly).
        landmark_indices: 68 vertex indices of the landmarks in every predicted mesh (else read
            ``NAME_landmarks.npy`` beside each prediction, if any, or the landmarks a :class:`PredictedMesh` gives).
        max_error: the CED's range of d (AUC over ``[0, max_error]``).
        progress: called with 1 after each (ground truth, method) pair.
        allow_missing: evaluate the pairs even when names are unmatched (a missing prediction counts as a
            failure); else unmatched names are an error.

    Returns:
        The report (what ``report.json`` holds): ``methods`` -> name -> ``n``, ``n_failed``, ``auc``,
        ``median``, ``mean``, ``mean_mm``, ``median_mm``, ``rms_mm``, ``landmarks`` (the same for the
        landmark-only alignment, or ``None``), ``samples`` (per sample records), ``unpaired``.

    Raises:
        ValueError / FileNotFoundError: a folder without meshes, nothing pairing, or unmatched names.
    """
    gt = list_meshes(gt_dir)
    sets = {name: prediction_set(source) for name, source in methods.items()}
    for prediction in sets.values():
        check_pairing(prediction, gt, gt_dir, allow_missing)
    predictions = {name: prediction.meshes for name, prediction in sets.items()}
    records = {name: [] for name in methods}
    for key, gt_path in gt.items():
        try:
            gt_vertices, gt_faces = _read_mesh(gt_path)
            index = TriangleMeshIndex(*check_mesh(gt_vertices, gt_faces, str(gt_path)))
            landmark_file = _landmarks_beside(gt_path)
            gt_landmarks = None if landmark_file is None else np.load(landmark_file)
            gt_error = None
        except (ValueError, OSError) as exc:
            gt_error = f"ground truth unreadable: {exc}"
        for name in methods:
            record = {"key": key}
            pred_path = predictions[name].get(key)
            if gt_error is not None:
                record.update(status="failed", error=gt_error)
            elif pred_path is None:
                record.update(status="failed", error="no prediction")
            else:
                record["prediction"] = pred_path.name
                try:
                    record.update(status="ok", **_evaluate_pair(pred_path, index, gt_landmarks, with_scale,
                                                                landmark_indices))
                except (ValueError, OSError) as exc:
                    record.update(status="failed", error=str(exc))
            records[name].append(record)
            if progress is not None:
                progress(1)
    report = {"format": FORMAT, "gt": str(gt_dir), "with_scale": with_scale, "max_error": max_error,
              "methods": {}}
    for name, prediction in sets.items():
        summary = summarise(records[name], "icp", max_error)
        summary["landmarks"] = summarise(records[name], "landmarks", max_error)
        summary.update(pred=str(prediction.source), unpaired=sorted(set(predictions[name]) - set(gt)),
                       samples=records[name])
        report["methods"][name] = summary
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, allow_nan=False, default=_no_nan))
    curves = {}
    for name in methods:
        for alignment in ALIGNMENTS:
            d = [r[alignment]["d"] if r["status"] == "ok" and alignment in r else math.inf for r in records[name]]
            if alignment == "icp" or report["methods"][name]["landmarks"] is not None:
                label = name if alignment == "icp" else f"{name} (landmarks)"
                curves[label] = np.array(d)
    plot_ced(curves, out / "ced.png", max_error=max_error)
    return report


def _no_nan(value):
    raise TypeError(f"not JSON serialisable: {value!r}")
