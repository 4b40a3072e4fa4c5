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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from diffface.atomic_io import atomic_write
from diffface.morphable_model import MorphableModel

from .predictor import FaceRegressor

MESH_FORMATS = ("none", "obj", "ply")


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
    """

    landmarks: str = "pts"
    detector_options: dict | None = None
    cropped: bool = False
    crop_scale: float = 1.25
    batch_size: int = 64
    meshes: str = "obj"

    def __post_init__(self):
        if self.meshes not in MESH_FORMATS:
            raise ValueError(f"meshes must be one of {MESH_FORMATS}, got {self.meshes!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


def list_inputs(source: str | Path) -> list[Path]:
    """One image file, or the images of a folder (sorted)."""
    from diffface.landmarks import list_images

    source = Path(source)
    if source.is_dir():
        images = list_images(source)
        if not images:
            raise ValueError(f"{source}: no images (.png, .jpg, ...) in this folder")
        return images
    if source.is_file():
        return [source]
    raise FileNotFoundError(f"{source}: no such image or folder")


def image_camera_params(regressor: FaceRegressor, params_crop: torch.Tensor, crop_matrix: torch.Tensor) -> torch.Tensor:
    """Parameters in the source image's camera from those in the crop's (see the module docstring).

    Shape:
        params_crop: (B, P); crop_matrix: (B, 3, 3) -> (B, P).
    """
    groups = regressor.layout.unpack(params_crop.double())
    scale, offset = crop_matrix[:, 0, :1].double(), crop_matrix[:, :2, 2].double()
    groups.focal = groups.focal / scale
    groups.principal_point = (groups.principal_point - offset) / scale
    return regressor.layout.pack(groups).to(params_crop.dtype)


def _crops(paths: Sequence[Path], regressor: FaceRegressor, config: PredictConfig,
           detector) -> Iterator[tuple[Path, torch.Tensor, torch.Tensor, tuple[int, int]]]:
    """``(path, crop (3, S, S), crop_matrix (3, 3), (H, W))`` per image."""
    from diffface.data.crops import crop_antialiased
    from diffface.landmarks import boxes_from_landmarks, read_image

    size = regressor.input_size
    for path in paths:
        image = read_image(path)
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        if config.cropped:
            if image.shape[:2] != (size, size):
                raise ValueError(f"{path}: --cropped inputs must be {size}x{size}, got {image.shape[1]}x{image.shape[0]}")
            yield path, pixels[0], torch.eye(3, dtype=torch.float64), image.shape[:2]
            continue
        landmarks = torch.from_numpy(detector.detect_one(image, path).landmarks)[None].float()
        # the same box-filtered crop as build-dataset's training crops (a plain bilinear resize aliases)
        crop, transform = crop_antialiased(pixels[0], boxes_from_landmarks(landmarks, config.crop_scale)[0], size)
        yield path, crop, transform.matrix[0].double(), image.shape[:2]


def predict_images(regressor: FaceRegressor, images: str | Path, out_dir: str | Path,
                   config: PredictConfig = PredictConfig(), model: MorphableModel | None = None) -> list[Path]:
    """Predict every image of ``images`` (a file or folder) in batches and write ``out_dir/NAME.npz`` (+ mesh).

    Args:
        regressor: from :func:`~diffface.networks.load_checkpoint`.
        model: the morphable model (needed for meshes; must match the checkpoint's fingerprint).

    Returns:
        the written ``.npz`` paths.
    """
    paths = list_inputs(images)
    if config.meshes != "none":
        if model is None:
            raise ValueError("meshes need the morphable model; pass model=")
        if model.fingerprint != regressor.model_identity.fingerprint:
            raise ValueError(f"morphable model {model.name!r} (fingerprint {model.fingerprint}) is not the one the "
                             f"checkpoint was trained for ({regressor.model_identity.name}, "
                             f"{regressor.model_identity.fingerprint})")
    detector = None
    if not config.cropped:
        from diffface.landmarks import make_detector

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

    for entry in _crops(paths, regressor, config, detector):
        pending.append(entry)
        if len(pending) == config.batch_size:
            flush()
    if pending:
        flush()
    return written


def _write_result(out: Path, path: Path, params: torch.Tensor, params_crop: torch.Tensor, matrix: torch.Tensor,
                  size: tuple[int, int], regressor: FaceRegressor, vertices: torch.Tensor | None,
                  model: MorphableModel | None, meshes: str) -> Path:
    from diffface.mesh_io import write_obj, write_ply

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
