"""The on-disk format of a fit job: file layout, the result ``.npz`` (written atomically) and its readers.

On-disk layout (``DIR``)::

    DIR/config.yaml              the resolved FitJobConfig (a re-run must agree on the fit settings)
    DIR/results/<key>.npz        one per fitted image (<key>: the image's path relative to INPUT's
                                 folder, e.g. ``sub/photo.jpg``; images outside it: ``_outside/<hash>_<name>``)
    DIR/results/<key>.failed.json  one per bad image: {"image", "key", "reason", "error", "rank"}
    DIR/meshes/<key>.obj|.ply    the fitted shape, model space (mm), on request (``save_meshes``);
                                 ``.ply`` carries the fitted albedo as vertex colours after stage 2
    DIR/log_rank<r>.jsonl        one line per image processed by rank r (ok or failed), in order
    DIR/summary.json             counts, mean energies, flags and failures of all ranks (rank 0, at the end)
    DIR/tensorboard/             energies per term and stage, images/s, overlays (rank 0)

Each ``results/<key>.npz`` (``numpy.load``, no pickles) holds:

=====================  ===========  =====================================================================
key                    dtype/shape  meaning
=====================  ===========  =====================================================================
``format``             str          ``"diffface-fit/1"``
``image``              str          the image path as listed
``key``                str          the result's key (see above)
``image_size``         int64 (2,)   ``(H, W)`` of the original image
``stages``             str (S,)     the stages run, e.g. ``["landmarks", "texture"]``
``params``             float32 (P,) the packed parameter vector (``model.layout.pack``; with stage 2 the
                                    fitting part ``β``, SH too, ``include_fitting=True``), original image frame
``param_names``        str (P,)     ``model.layout.names(...)``, one per entry of ``params``
``landmarks``          float32      (68, 2) fitted 2D landmarks (contours marched), original image pixels
``landmarks_observed`` float32      (68, 2) the landmarks fitted to (NaN rows: missing)
``energy_names``       str (T,)     ``<stage>/<term>``: ``landmarks/{total,landmarks,id_prior,exp_prior}``,
                                    ``texture/{total,texture,landmarks,albedo_prior,exp_prior}``
``energy_values``      float64 (T,) the final energy of each term, as the stage's fit function returns it
``flag_names``         str (G,)     ``diverged`` (stage 2 reset a non-finite sample), ``nonfinite`` (an
                                    energy or parameter is not finite), ``partial_landmarks`` (NaN rows)
``flag_values``        bool (G,)
``crop_matrix``        float64      (3, 3) source pixels → fitting-crop pixels (``CropTransform.matrix``)
``crop_size``          int64 ()     side of the fitting crop
``model_name``         str          the morphable model's name
``model_fingerprint``  str          ``model.fingerprint`` (which model the parameters belong to)
=====================  ===========  =====================================================================

The parameters are in the original image's frame (see :mod:`diffface.fitting.job.batch`).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from diffface.atomic_io import atomic_write, write_text_atomic
from diffface.config_io import load_yaml
from diffface.mesh_io import write_obj, write_ply

if TYPE_CHECKING:
    from diffface.morphable_model import MorphableModel

    from .batch import BatchFit
    from .config import FitJobConfig
    from .inputs import FitItem

RESULT_FORMAT = "diffface-fit/1"
RESULTS_DIR = "results"
CONFIG_NAME = "config.yaml"
SUMMARY_NAME = "summary.json"
FAILED_SUFFIX = ".failed.json"
# what every reader relies on (crop_matrix and crop_size are newer and optional for readers)
REQUIRED_ARRAYS = ("image", "key", "image_size", "stages", "params", "param_names", "landmarks", "landmarks_observed",
                   "energy_names", "energy_values", "flag_names", "flag_values", "model_name", "model_fingerprint")


def result_path(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{key}.npz"


def failure_path(out_dir: str | Path, key: str) -> Path:
    return Path(out_dir) / RESULTS_DIR / f"{key}{FAILED_SUFFIX}"


def write_fit_result(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write one result ``.npz`` atomically (a temporary file, then a rename): it exists whole or not at all."""
    path = Path(path)
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)
    return path


def result_arrays(item: FitItem, fit: BatchFit, b: int, model: MorphableModel, config: FitJobConfig) -> dict:
    texture = "texture" in config.stages
    return {
        "format": np.array(RESULT_FORMAT),
        "image": np.array(item.image),
        "key": np.array(item.key),
        "image_size": np.asarray(item.image_size, dtype=np.int64),
        "stages": np.array(list(config.stages)),
        "params": fit.packed[b].cpu().numpy().astype(np.float32),
        "param_names": np.array(model.layout.names(include_fitting=texture)),
        "landmarks": fit.landmarks[b].cpu().numpy().astype(np.float32),
        "landmarks_observed": np.asarray(item.landmarks, dtype=np.float32),
        "energy_names": np.array(list(fit.energies)),
        "energy_values": np.array([float(e[b]) for e in fit.energies.values()], dtype=np.float64),
        "flag_names": np.array(list(fit.flags)),
        "flag_values": np.array([bool(f[b]) for f in fit.flags.values()]),
        "crop_matrix": np.asarray(item.crop_matrix, dtype=np.float64),
        "crop_size": np.array(config.image_size, dtype=np.int64),
        "model_name": np.array(model.name),
        "model_fingerprint": np.array(model.fingerprint),
    }


def write_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray | None) -> Path:
    """A fitted mesh as ``.obj`` (positions rounded to 0.1 µm) or ``.ply`` (float32 positions, optional
    per-vertex colours in [0, 1] stored as uint8 RGB), written atomically; the folder is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".ply":
        rgb = None if colours is None else np.clip(colours * 255 + 0.5, 0, 255).astype(np.uint8)
        return write_ply(path, np.asarray(vertices, dtype=np.float32), faces, rgb)
    return write_obj(path, np.round(vertices.astype(np.float64), 4), faces)


def read_fit_result(path: str | Path) -> dict:
    """One result file as a dict of arrays (strings as ``str``, energies and flags as dicts).

    Raises:
        ValueError: naming the file, when it is unreadable (damaged, truncated, not an ``.npz``) or not a
        complete result.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: unreadable fit result ({type(exc).__name__}: {exc})") from exc
    if str(arrays.get("format", "")) != RESULT_FORMAT:
        raise ValueError(f"{path}: not a {RESULT_FORMAT} result (format {arrays.get('format')!r})")
    missing = [key for key in REQUIRED_ARRAYS if key not in arrays]
    if missing:
        raise ValueError(f"{path}: incomplete fit result (no {', '.join(missing)})")
    out = {k: (str(v) if v.dtype.kind == "U" and v.ndim == 0 else v) for k, v in arrays.items()}
    out["energy"] = dict(zip(map(str, arrays["energy_names"]), map(float, arrays["energy_values"])))
    out["flags"] = dict(zip(map(str, arrays["flag_names"]), map(bool, arrays["flag_values"])))
    out["param_names"] = [str(n) for n in arrays["param_names"]]
    out["stages"] = [str(s) for s in arrays["stages"]]
    return out


def read_fit_results(out_dir: str | Path) -> dict:
    """Every rank's results in ``out_dir`` as one table, rows sorted by key.

    Returns:
        ``key``, ``image``, ``model_fingerprint`` (N,) str arrays; ``params`` (N, P) float32 (rows
        with fewer entries, e.g. stage 1 only next to stage 2, padded with NaN); ``param_names`` (P,);
        ``landmarks``, ``landmarks_observed`` (N, 68, 2); ``image_size`` (N, 2); ``energy/<stage>/<term>``
        (N,) float64 (NaN where a stage did not run); ``flag/<name>`` (N,) bool; ``failed``: a list of
        ``{"image", "key", "reason", "error", "rank"}`` records of images recorded as bad, and of result
        files that cannot be read (``error`` ``"UnreadableResult"``, the reason naming the file).
    """
    folder = Path(out_dir) / RESULTS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no fit results here")
    paths = sorted(p for p in folder.rglob("*.npz") if not p.name.startswith("."))
    records, failed = [], []
    for path in paths:
        try:
            records.append(read_fit_result(path))
        except ValueError as exc:
            failed.append({"image": "", "key": path.relative_to(folder).as_posix()[:-len(".npz")],
                           "reason": str(exc), "error": "UnreadableResult"})
    done = {r["key"] for r in records} | {f["key"] for f in failed}
    for path in sorted(folder.rglob(f"*{FAILED_SUFFIX}")):
        if path.name.startswith("."):
            continue
        record = read_failure_record(path, folder)
        if record.get("key") not in done:
            failed.append(record)
    records.sort(key=lambda r: r["key"])
    names = max((r["param_names"] for r in records), key=len, default=[])
    table: dict[str, Any] = {
        "key": np.array([r["key"] for r in records], dtype=str),
        "image": np.array([r["image"] for r in records], dtype=str),
        "model_fingerprint": np.array([r["model_fingerprint"] for r in records], dtype=str),
        "param_names": names,
        "params": np.full((len(records), len(names)), np.nan, dtype=np.float32),
        "landmarks": np.stack([r["landmarks"] for r in records]) if records else np.zeros((0, 68, 2), np.float32),
        "landmarks_observed": (np.stack([r["landmarks_observed"] for r in records]) if records
                               else np.zeros((0, 68, 2), np.float32)),
        "image_size": np.stack([r["image_size"] for r in records]) if records else np.zeros((0, 2), np.int64),
    }
    for n, r in enumerate(records):
        if r["param_names"] != names[:len(r["param_names"])]:
            raise ValueError(f"{r['key']}: its parameter layout differs from the others' (another model?)")
        table["params"][n, :len(r["params"])] = r["params"]
    for term in sorted({t for r in records for t in r["energy"]}):
        table[f"energy/{term}"] = np.array([r["energy"].get(term, np.nan) for r in records], dtype=np.float64)
    for flag in sorted({f for r in records for f in r["flags"]}):
        table[f"flag/{flag}"] = np.array([r["flags"].get(flag, False) for r in records], dtype=bool)
    table["failed"] = failed
    return table


def read_failure_record(path: Path, folder: Path) -> dict:
    """A ``.failed.json`` record under ``folder`` (``results/``); an unreadable one becomes a record whose
    reason names the file."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict):
            return record
        problem = f"not a JSON object ({type(record).__name__})"
    except (OSError, ValueError) as exc:
        problem = str(exc)
    return {"image": "", "key": path.relative_to(folder).as_posix()[:-len(FAILED_SUFFIX)],
            "reason": f"{path}: unreadable failure record ({problem})", "error": "UnreadableRecord"}


def fit_model_spec(out_dir: str | Path) -> str | None:
    """The ``model`` a fit job's ``config.yaml`` names (``"builtin"`` or a file), or None when it names none."""
    try:
        config = load_yaml((Path(out_dir) / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    model = config.get("model") if isinstance(config, dict) else None
    return str(model) if model else None


@dataclass(frozen=True)
class FittedMesh:
    """The fitted shape of one result file, built on demand from its parameters and the model.

    Attributes:
        path: the result ``.npz``.
        model: the morphable model the result was fitted with (its fingerprint is checked on load).
    """

    path: Path
    model: MorphableModel

    @property
    def name(self) -> str:
        return self.path.name

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(vertices (V, 3), triangles (F, 3), landmarks (68, 3))`` in model space (mm); landmarks the
        model's landmark vertices (NaN where undefined).

        Raises:
            ValueError: naming the file, when it is unreadable or was fitted with another model.
        """
        result = read_fit_result(self.path)
        model = self.model
        if result["model_fingerprint"] != model.fingerprint:
            raise ValueError(f"{self.path}: fitted with the model {result['model_name']!r} (fingerprint "
                             f"{result['model_fingerprint']}), not with {model.name!r} ({model.fingerprint})")
        params = torch.from_numpy(np.asarray(result["params"], dtype=np.float32)[:model.layout.network_size])
        groups = model.layout.unpack(params[None].to(model.mean_shape.device))
        with torch.no_grad():
            vertices = model.shape(groups.alpha_id, groups.alpha_exp)[0].double().cpu().numpy()
        indices = model.landmark_indices.cpu().numpy()
        landmarks = vertices[np.clip(indices, 0, None)].copy()
        landmarks[indices < 0] = np.nan
        return vertices, model.triangles.cpu().numpy(), landmarks


def fitted_meshes(out_dir: str | Path, model: MorphableModel) -> dict[str, FittedMesh]:
    """``{key: FittedMesh}`` of every result file of a fit folder. An unreadable file is kept (its load
    raises, naming it).

    Raises:
        FileNotFoundError: the folder holds no ``results/``. ValueError: naming the first result fitted with
        another model than ``model`` (by fingerprint).
    """
    folder = Path(out_dir) / RESULTS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no fit results here")
    meshes = {}
    for path in sorted(p for p in folder.rglob("*.npz") if not p.name.startswith(".")):
        try:
            result = read_fit_result(path)
        except ValueError:
            result = None
        if result is not None and result["model_fingerprint"] != model.fingerprint:
            raise ValueError(f"{path}: fitted with the model {result['model_name']!r} (fingerprint "
                             f"{result['model_fingerprint']}), not with {model.name!r} ({model.fingerprint}); "
                             "give the model it was fitted with")
        meshes[path.relative_to(folder).as_posix()[:-len(".npz")]] = FittedMesh(path, model)
    return meshes


def write_summary(out_dir: Path, listed: int, ranks: list[dict], left_out: dict[str, int] | None = None) -> dict:
    """Write ``summary.json``; ``left_out``: ``{suffix: count}`` of the input folder's files that are not images."""
    table = read_fit_results(out_dir)
    energies = {k[len("energy/"):]: float(np.nanmean(v)) if np.isfinite(v).any() else None
                for k, v in table.items() if k.startswith("energy/")}
    summary = {
        "format": RESULT_FORMAT,
        "images": listed,
        "results": int(len(table["key"])),
        "failed": len(table["failed"]),
        "energy_mean": energies,
        "flags": {k[len("flag/"):]: int(v.sum()) for k, v in table.items() if k.startswith("flag/")},
        "model_fingerprints": sorted(set(table["model_fingerprint"].tolist())),
        "ranks": ranks,
        "left_out": dict(left_out or {}),
        "failures": [{"image": f.get("image"), "reason": f.get("reason")} for f in table["failed"]],
    }
    write_text_atomic(out_dir / SUMMARY_NAME, json.dumps(summary, indent=1))
    return summary


def record_failure(out_dir: Path, item: FitItem, rank: int, log) -> None:
    """Write ``results/<key>.failed.json`` for a bad image and log it (``log.write(record)``)."""
    record = {"image": item.image, "key": item.key, "status": "failed", "reason": item.reason,
              "error": item.error, "rank": rank}
    write_text_atomic(failure_path(out_dir, item.key), json.dumps(record))
    log.write(record)


def save_fitted_mesh(model: MorphableModel, fit: BatchFit, b: int, item: FitItem, config: FitJobConfig,
                     out_dir: Path) -> None:
    """Write ``meshes/<key>.<format>`` of item ``b`` of a fitted batch (none when its shape is not finite)."""
    params = fit.params.index(slice(b, b + 1))
    with torch.no_grad():
        vertices = model.shape(params.alpha_id, params.alpha_exp)[0].cpu().numpy()
        colours = None
        if params.beta is not None and model.tex_dims:
            colours = model.albedo(params.beta)[0].cpu().numpy()
    if not np.isfinite(vertices).all():  # the result records the `nonfinite` flag; no mesh to write
        return
    path = Path(out_dir) / "meshes" / f"{item.key}.{config.save_meshes}"
    write_mesh(path, vertices, model.triangles.cpu().numpy(), colours)


def write_fitted(model: MorphableModel, fit: BatchFit, items: list[FitItem], config: FitJobConfig, out_dir: Path,
                 rank: int, log) -> None:
    """Write every item's result (and mesh), drop an earlier failure record of it, and log it."""
    for b, item in enumerate(items):
        if config.save_meshes != "none":
            save_fitted_mesh(model, fit, b, item, config, out_dir)
        write_fit_result(result_path(out_dir, item.key), result_arrays(item, fit, b, model, config))
        failure_path(out_dir, item.key).unlink(missing_ok=True)
        log.write({"image": item.image, "key": item.key, "status": "ok", "rank": rank,
                   "energy": {k: float(v[b]) for k, v in fit.energies.items()},
                   "flags": {k: bool(v[b]) for k, v in fit.flags.items()}})
