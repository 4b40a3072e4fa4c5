"""What a dataset is built from: fit-job results, a synthetic benchmark, or a 300W-style photo folder.

Each source is read into the same :class:`SourceFaces`: per face, the photo, its parameters in the
photo's frame and its landmarks, plus the failures the source already recorded.

* ``fits``: a ``diffface fit`` output folder (``results/<key>.npz``, see
  :mod:`diffface.fitting.job.results`).
* ``synth``: a ``diffface synth`` folder (``manifest.json``, ``params.npz``): the parameters are the
  ground truth, the observed landmarks are the noisy ``.pts`` ones.
* ``images``: folders of photos with 300W ``.pts`` files beside them (any depth, e.g. 300W's
  ``01_Indoor/`` and ``02_Outdoor/``); :func:`fit_photo_folder` fits them into ``DATASET/fits`` first
  (resumable: the fit job skips what it already did), and that folder is then read as ``fits``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffface.landmarks.images import IMAGE_SUFFIXES, scan_images
from diffface.landmarks.limits import InputLimits
from diffface.fitting.job.config import FitJobConfig
from diffface.fitting.job.inputs import FitInput
from diffface.fitting.job.results import RESULTS_DIR, read_failure_record, read_fit_result
from diffface.fitting.job.results import fit_model_spec
from diffface.fitting.job.runner import run_fit_job

SOURCE_KINDS = ("fits", "synth", "images")
FITS_DIR = "fits"


@dataclass
class SourceFace:
    """One face to turn into a training item.

    Attributes:
        key: unique id within the source (the image's relative path for fits).
        image: the photo.
        params: packed parameters in the photo's frame (network or full layout).
        landmarks_observed: the landmarks the fit used (NaN rows: missing), photo pixels.
        landmarks_fitted: landmarks of the fitted model (None: compute from ``params``).
        energies: the fit's final energies (``<stage>/<term>``).
        fit_flags: flags the fit raised (``diverged``, ``partial_landmarks``, ...).

    Shape:
        params: (P,); landmarks_*: (68, 2).
    """

    key: str
    image: Path
    params: np.ndarray
    landmarks_observed: np.ndarray
    landmarks_fitted: np.ndarray | None = None
    energies: dict = field(default_factory=dict)
    fit_flags: list = field(default_factory=list)


@dataclass
class SourceFaces:
    """All faces of a source, with the model they belong to and what the source already failed on."""

    kind: str
    root: Path
    faces: list[SourceFace]
    failed: list[dict]
    model_spec: str
    model_fingerprints: list[str]
    param_names: list[str]
    left_out: dict[str, int] = field(default_factory=dict)


def source_kind(source: str | Path) -> str:
    """``"fits"``, ``"synth"`` or ``"images"`` (see the module docstring); raises naming ``source`` otherwise."""
    source = Path(source)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder of fits, synthetic faces or photos")
    if (source / "dataset.json").is_file():
        raise ValueError(f"{source}: this is a built dataset already; give the fits or photos it came from")
    if (source / "results").is_dir():
        return "fits"
    manifest = source / "manifest.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text(encoding="utf-8")).get("format") == "diffface-synth":
                return "synth"
        except (ValueError, AttributeError):
            pass
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.rglob("*") if p.is_file()):
        return "images"
    raise ValueError(f"{source}: neither fit results (results/), a synthetic benchmark (manifest.json) "
                     "nor photos with .pts landmarks")


def read_fits(folder: str | Path) -> SourceFaces:
    """The results of a fit job (every rank's), rows sorted by key; ``.failed.json`` records become ``failed``."""
    folder = Path(folder)
    results = folder / RESULTS_DIR
    if not results.is_dir():
        raise FileNotFoundError(f"{results}: no fit results here")
    faces, failed, fingerprints, names = [], [], set(), []
    for path in sorted(p for p in results.rglob("*.npz") if not p.name.startswith(".")):
        try:
            result = read_fit_result(path)
        except ValueError as exc:  # the message names the file
            failed.append({"key": path.relative_to(results).as_posix()[:-4], "image": "", "reason": str(exc)})
            continue
        fingerprints.add(result["model_fingerprint"])
        if len(result["param_names"]) > len(names):
            names = result["param_names"]
        faces.append(SourceFace(
            key=result["key"], image=_resolve_image(result["image"], folder), params=result["params"],
            landmarks_observed=result["landmarks_observed"], landmarks_fitted=result["landmarks"],
            energies=result["energy"], fit_flags=[k for k, v in result["flags"].items() if v]))
    done = {f.key for f in faces} | {f["key"] for f in failed}
    for path in sorted(results.rglob("*.failed.json")):
        record = read_failure_record(path, results)
        if record.get("key") not in done:
            failed.append({"key": record.get("key", ""), "image": record.get("image", ""),
                           "reason": f"fit failed: {record.get('reason')}"})
    return SourceFaces(kind="fits", root=folder, faces=sorted(faces, key=lambda f: f.key), failed=failed,
                       model_spec=_fit_model_spec(folder), model_fingerprints=sorted(fingerprints), param_names=names)


def _fit_model_spec(folder: Path) -> str:
    """The model a fit job used (its ``config.yaml``), ``"builtin"`` when unknown."""
    return fit_model_spec(folder) or "builtin"


def _resolve_image(listed: str, folder: Path) -> Path:
    """An image path as the fit job listed it: as is, else relative to the fit folder's parent."""
    path = Path(listed)
    if path.is_absolute() or path.exists():
        return path
    return folder.parent / path


def read_synth(folder: str | Path) -> SourceFaces:
    """A ``diffface synth`` benchmark: true parameters (full layout) and the noisy observed landmarks."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    with np.load(folder / "params.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    names = [str(n) for n in arrays["sample_names"]]
    images = {s["name"]: folder / s["image"] for s in manifest.get("samples", [])}
    faces = [SourceFace(key=name, image=images.get(name, folder / "images" / f"{name}.png"), params=arrays["params"][i],
                        landmarks_observed=arrays["landmarks_2d"][i], landmarks_fitted=arrays["landmarks_2d_clean"][i])
             for i, name in enumerate(names)]
    model = manifest.get("model", {})
    return SourceFaces(kind="synth", root=folder, faces=faces, failed=[], model_spec=str(model.get("spec", "builtin")),
                       model_fingerprints=[str(arrays["model_fingerprint"])],
                       param_names=[str(n) for n in arrays["param_names"]])


def scan_photos(folder: str | Path, exclude: str | Path | None = None):
    """Every photo under ``folder`` (any depth, sorted, hidden folders and ``exclude`` left out) and the
    count of the other files (:class:`~diffface.landmarks.ImageScan`)."""
    folder = Path(folder)
    excluded = Path(exclude).resolve() if exclude is not None else None

    def wanted(path: Path) -> bool:
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            return False
        return excluded is None or not path.resolve().is_relative_to(excluded)

    return scan_images(p for p in folder.rglob("*") if wanted(p))


def list_photos(folder: str | Path, exclude: str | Path | None = None) -> list:
    """Every photo under ``folder`` (:func:`scan_photos`), as fit-job inputs keyed by their relative path.

    Returns:
        a list of :class:`diffface.fitting.job.inputs.FitInput`.
    """
    folder = Path(folder)
    photos = scan_photos(folder, exclude).images
    if not photos:
        raise ValueError(f"{folder}: no photos ({', '.join(IMAGE_SUFFIXES)}) found")
    return [FitInput(path=p.resolve(), key=p.relative_to(folder).as_posix()) for p in photos]


def fit_photo_folder(folder: str | Path, out: str | Path, model: str = "builtin",
                     stages: tuple[str, ...] = ("landmarks",), image_size: int = 224, batch_size: int = 16,
                     device: str = "cpu", progress: bool = False, exclude: str | Path | None = None,
                     limits: InputLimits = InputLimits()) -> Path:
    """Fit every photo under ``folder`` (but ``exclude``) to its ``.pts`` landmarks into ``out`` (resumable;
    photos and landmarks outside ``limits`` are recorded as failed); returns ``out``."""
    photos = list_photos(folder, exclude=exclude)
    config = FitJobConfig(model=model, detector="pts", stages=tuple(stages), image_size=image_size,
                          batch_size=batch_size, num_workers=0, device=device, tensorboard=False, progress=progress,
                          limits=limits)
    run_fit_job(photos, out, config)
    return Path(out)


def read_source(source: str | Path, dataset: str | Path, model: str = "builtin", fit_stages: tuple[str, ...] = ("landmarks",),
                fit_image_size: int = 224, device: str = "cpu", progress: bool = False,
                limits: InputLimits = InputLimits()) -> SourceFaces:
    """Read any source kind; a photo folder is fitted into ``dataset/fits`` first (its files that are not
    images are counted in ``left_out``)."""
    kind = source_kind(source)
    if kind == "fits":
        return read_fits(source)
    if kind == "synth":
        return read_synth(source)
    fits = fit_photo_folder(source, Path(dataset) / FITS_DIR, model, fit_stages, fit_image_size, device=device,
                            progress=progress, exclude=dataset, limits=limits)
    faces = read_fits(fits)
    faces.kind = "images"
    faces.left_out = scan_photos(source, exclude=dataset).left_out
    return faces
