"""Batched prediction on photos: landmarks → 96-px crop → regressor → parameters in the photo's camera.

``diffface predict CKPT IMAGES --out DIR`` writes, per image ``NAME``:

``DIR/NAME.npz`` (``numpy.load``, no pickles):

=================  ============  ===================================================================
key                dtype/shape   meaning
=================  ============  ===================================================================
``params``         float32 (P,)  the parameters in the *original image's* camera: focal and principal
                                 point mapped back through the inverse crop transform
                                 (``f = f_crop / s``, ``P = (P_crop − offset) / s``); shape, pose and
                                 translation are unchanged by a crop
``params_crop``    float32 (P,)  the network's output, in the crop's camera
``param_names``    str (P,)      one name per entry (:meth:`ParamLayout.names`)
``crop_matrix``    float64 (3,3) source pixels → crop pixels (identity with ``--cropped``)
``image_size``     int64 (2,)    height, width of the input image
``model``          str (2,)      morphable model name and fingerprint
=================  ============  ===================================================================

``DIR/NAME.obj`` or ``.ply`` (``--meshes``): the predicted shape ``S(p)`` in model space (mm).

``DIR/predict_report.json``: ``images``, ``ok``, ``failed`` counts, ``failures`` (``image``, ``reason``,
``error``) and ``left_out`` (``{suffix: count}`` of the folder's files that are not images). An image
of a folder that cannot be used (unreadable, too large or small, no landmarks, landmarks off the image)
is recorded there and skipped; the others are predicted. A single image given alone is the whole job:
its error is raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from diffface.atomic_io import atomic_write, write_text_atomic
from diffface.data.crops import crop_antialiased
from diffface.landmarks import (InputLimits, WeightsNotFoundError, boxes_from_landmarks, check_face_input,
                                make_detector, read_image, scan_image_folder)
from diffface.morphable_model import MorphableModel

from .predictor import FaceRegressor
from diffface.mesh_io import write_obj, write_ply

MESH_FORMATS = ("none", "obj", "ply")
REPORT_NAME = "predict_report.json"


@dataclass(frozen=True)
class PredictConfig:
    """Settings of :func:`predict_images`.

    Attributes:
        landmarks: ``pts``, ``dlib``, ``fan`` or ``auto`` (how to find the face to crop); ignored with ``cropped``.
        detector_options: passed to :func:`diffface.landmarks.make_detector` (e.g. ``annotation_dir``).
        cropped: the inputs are already the network's crops (S × S); no landmarks, crop camera = image camera.
        crop_scale: crop side over the landmarks' larger extent.
        batch_size: crops per forward pass.
        meshes: ``none``, ``obj`` or ``ply``.
        limits: images and landmarks refused (:class:`~diffface.landmarks.InputLimits`; with ``cropped`` only
            ``max_image_pixels`` applies).
    """

    landmarks: str = "pts"
    detector_options: dict | None = None
    cropped: bool = False
    crop_scale: float = 1.25
    batch_size: int = 64
    meshes: str = "obj"
    limits: InputLimits = field(default_factory=InputLimits)

    def __post_init__(self):
        if self.meshes not in MESH_FORMATS:
            raise ValueError(f"meshes must be one of {MESH_FORMATS}, got {self.meshes!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass
class Prediction:
    """What :func:`predict_images` did.

    Attributes:
        written: the ``.npz`` files written, in input order.
        failures: ``{"image", "reason", "error"}`` per image that could not be used.
        left_out: ``{suffix: count}`` of the input folder's files that are not images.
        report: the ``predict_report.json`` written.
    """

    written: list[Path]
    failures: list[dict]
    left_out: dict[str, int]
    report: Path


def list_inputs(source: str | Path) -> tuple[list[Path], dict[str, int]]:
    """One image file, or the images of a folder (sorted), and ``{suffix: count}`` of the folder's other files."""
    source = Path(source)
    if source.is_dir():
        scan = scan_image_folder(source)
        if not scan.images:
            raise ValueError(f"{source}: no images (.png, .jpg, ...) in this folder")
        return scan.images, scan.left_out
    if source.is_file():
        return [source], {}
    raise FileNotFoundError(f"{source}: no such image or folder")


def image_camera_params(regressor: FaceRegressor, params_crop: torch.Tensor, crop_matrix: torch.Tensor) -> torch.Tensor:
    """Parameters in the source image's camera from those in the crop's (see the module docstring).

    Shape:
        params_crop: (B, P); crop_matrix: (B, 3, 3) -> (B, P).
    """
    groups = regressor.layout.unpack(params_crop.double())
    scale, offset = crop_matrix[:, 0, :1].double(), crop_matrix[:, :2, 2].double()
    groups = replace(groups, focal=groups.focal / scale, principal_point=(groups.principal_point - offset) / scale)
    return regressor.layout.pack(groups).to(params_crop.dtype)


def _crop(path: Path, regressor: FaceRegressor, config: PredictConfig,
          detector) -> tuple[Path, torch.Tensor, torch.Tensor, tuple[int, int]]:
    """``(path, crop (3, S, S), crop_matrix (3, 3), (H, W))`` of one image; raises ``ValueError`` naming it."""
    size = regressor.input_size
    image = read_image(path, config.limits.max_image_pixels)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    if config.cropped:
        if image.shape[:2] != (size, size):
            raise ValueError(f"{path}: --cropped inputs must be {size}x{size}, got {image.shape[1]}x{image.shape[0]}")
        return path, pixels[0], torch.eye(3, dtype=torch.float64), image.shape[:2]
    landmarks = detector.detect_one(image, path).landmarks
    check_face_input(image.shape[:2], landmarks, path, config.limits)
    boxes = boxes_from_landmarks(torch.from_numpy(landmarks)[None].float(), config.crop_scale)
    # the same box-filtered crop as build-dataset's training crops (a plain bilinear resize aliases)
    crop, transform = crop_antialiased(pixels[0], boxes[0], size)
    return path, crop, transform.matrix[0].double(), image.shape[:2]


def _crops(paths: Sequence[Path], regressor: FaceRegressor, config: PredictConfig, detector,
           failures: list[dict] | None) -> Iterator[tuple[Path, torch.Tensor, torch.Tensor, tuple[int, int]]]:
    """:func:`_crop` per image; a bad image is appended to ``failures`` and skipped (raised when ``failures``
    is None)."""
    for path in paths:
        try:
            entry = _crop(path, regressor, config, detector)
        except WeightsNotFoundError:
            raise  # the detector's, not the image's
        except (ValueError, FileNotFoundError) as exc:
            if failures is None:
                raise
            failures.append({"image": str(path), "reason": str(exc), "error": type(exc).__name__})
            continue
        yield entry


def predict_images(regressor: FaceRegressor, images: str | Path, out_dir: str | Path,
                   config: PredictConfig = PredictConfig(), model: MorphableModel | None = None) -> Prediction:
    """Predict every image of ``images`` (a file or folder) in batches and write ``out_dir/NAME.npz`` (+ mesh)
    and ``out_dir/predict_report.json``; the images of a folder that cannot be used are recorded and skipped.

    Args:
        regressor: from :func:`~diffface.networks.load_checkpoint`.
        model: the morphable model (needed for meshes; must match the checkpoint's fingerprint).

    Returns:
        the written ``.npz`` paths, the failures and the report's path.

    Raises:
        ValueError / FileNotFoundError: bad settings, a missing input, or the one image given alone is bad.
    """
    paths, left_out = list_inputs(images)
    failures: list[dict] | None = [] if Path(images).is_dir() else None
    if config.meshes != "none":
        if model is None:
            raise ValueError("meshes need the morphable model; pass model=")
        if model.fingerprint != regressor.model_identity.fingerprint:
            raise ValueError(f"morphable model {model.name!r} (fingerprint {model.fingerprint}) is not the one the "
                             f"checkpoint was trained for ({regressor.model_identity.name}, "
                             f"{regressor.model_identity.fingerprint})")
    detector = None
    if not config.cropped:
        detector = make_detector(config.landmarks, **(config.detector_options or {}))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pending: list[tuple[Path, torch.Tensor, torch.Tensor, tuple[int, int]]] = []

    def flush() -> None:
        crops = torch.stack([p[1] for p in pending])
        matrices = torch.stack([p[2] for p in pending])
        params_crop = regressor.layout.pack(regressor.predict(crops, config.batch_size))
        params = image_camera_params(regressor, params_crop, matrices)
        vertices = None
        if config.meshes != "none":
            groups = regressor.layout.unpack(params)
            with torch.no_grad():
                vertices = model.shape(groups.alpha_id, groups.alpha_exp)
        for k, (path, _, matrix, size) in enumerate(pending):
            written.append(_write_result(out, path, params[k], params_crop[k], matrix, size, regressor,
                                         None if vertices is None else vertices[k], model, config.meshes))
        pending.clear()

    for entry in _crops(paths, regressor, config, detector, failures):
        pending.append(entry)
        if len(pending) == config.batch_size:
            flush()
    if pending:
        flush()
    failures = failures or []
    report = {"images": len(paths), "ok": len(written), "failed": len(failures), "left_out": left_out,
              "failures": failures, "written": [p.name for p in written]}
    report_path = write_text_atomic(out / REPORT_NAME, json.dumps(report, indent=1))
    return Prediction(written=written, failures=failures, left_out=left_out, report=report_path)


def _write_result(out: Path, path: Path, params: torch.Tensor, params_crop: torch.Tensor, matrix: torch.Tensor,
                  size: tuple[int, int], regressor: FaceRegressor, vertices: torch.Tensor | None,
                  model: MorphableModel | None, meshes: str) -> Path:
    target = out / f"{path.stem}.npz"
    with atomic_write(target) as handle:
        np.savez(handle, params=params.float().numpy(), params_crop=params_crop.float().numpy(),
                 param_names=np.array(regressor.layout.names()), crop_matrix=matrix.numpy(),
                 image_size=np.array(size, dtype=np.int64),
                 model=np.array([regressor.model_identity.name, regressor.model_identity.fingerprint]))
    if vertices is not None:
        writer = write_obj if meshes == "obj" else write_ply
        writer(out / f"{path.stem}.{meshes}", vertices.double().numpy(), model.triangles.cpu().numpy())
    return target
