"""Fitting one batch: stage 1 (landmarks), optionally stage 2 (texture), mapped back to the original images.

Frames. Every image is fitted in a square crop of ``image_size`` pixels around its landmarks
(:func:`diffface.landmarks.boxes_from_landmarks`, scale ``crop_scale``), so all images of a batch
share one size and the stage weights act as at the method's 224 px. The stored parameters are
mapped back to the **original image**: the crop is ``u' = s·u + t``, so the stored camera is
``f = f_crop / s``, ``(Px, Py) = (P_crop − t) / s``; pose, shape, albedo and lighting are unchanged.
Projecting the stored parameters onto the original image gives the stored fitted landmarks. The
crop matrix is stored too (``crop_matrix``) to go back to the crop frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from diffface.landmark_marching import project_landmarks
from diffface.morphable_model import MorphableModel
from diffface.params import FaceParameters

from ..frame_groups import FrameGroups
from ..landmark_fitting import fit_landmarks, initial_parameters
from ..sequence_fitting import fit_landmarks_sequence
from ..texture_fitting import fit_texture
from .config import FitJobConfig
from .inputs import FitItem


def fitted_landmarks(model: MorphableModel, params: FaceParameters) -> torch.Tensor:
    return project_landmarks(model, params)[0]


@dataclass
class BatchFit:
    """A fitted batch: parameters in the crop frame and in the original frame, energies and flags."""

    crop_params: FaceParameters
    params: FaceParameters
    packed: torch.Tensor
    landmarks: torch.Tensor
    energies: dict
    flags: dict
    landmarks_crop: torch.Tensor


def video_camera_start(model: MorphableModel, landmarks_crop: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                       frame_sizes: torch.Tensor, groups: FrameGroups, image_size: int, focal_px: float) -> FaceParameters:
    """Stage 1's starting parameters for videos: one camera per subject in the original frames.

    Each crop ``u' = s·u + t`` magnifies and shifts its frame by its own ``s`` and ``t``. The per-image default
    (focal ``focal_px`` and principal point at the centre of every crop) gives every frame its own original-frame
    camera (focal ``focal_px / s``, principal point following the crop box), so the depth and the image-plane
    position would follow the crops' jitter. Here every frame of a subject has the original-frame focal
    ``F = focal_px / mean_s(s)`` and principal point at the frame's centre ``c``: ``F·s`` and ``s·c + t`` in each
    crop.

    Shape:
        landmarks_crop: (B, 68, 2); scale: (B, 1); offset: (B, 2); frame_sizes: (B, 2) original (H, W)
        -> FaceParameters (B, ...).
    """
    mean_scale = groups.sum_per_subject(scale) / groups.frames_per_subject(scale.dtype)[:, None]
    focal = focal_px * scale / mean_scale[groups.subject]
    centre = frame_sizes.flip(-1).to(scale.dtype) / 2
    return initial_parameters(model, landmarks_crop, (image_size, image_size), focal, centre * scale + offset)


def fit_batch(model: MorphableModel, items: list[FitItem], config: FitJobConfig, device: torch.device,
              groups: FrameGroups | None = None) -> BatchFit:
    """Fit a batch of images (each alone), or with ``groups`` the frames of whole subjects together
    (``config.sequence``: shared identity and albedo, smoothness)."""
    size = config.image_size
    # stage 1 touches a few hundred vertices only, so float64 costs nothing and makes each image's fit
    # independent of the batch it shares (in float32 the LM steps amplify rounding to ~1e-2 in α)
    stage1_dtype = torch.float64 if config.landmarks_float64 else torch.float32
    observed = torch.from_numpy(np.stack([it.landmarks for it in items])).to(device, torch.float64)
    matrix = torch.from_numpy(np.stack([it.crop_matrix for it in items])).to(device, torch.float64)
    scale, offset = matrix[:, 0, :1], matrix[:, :2, 2]
    landmarks_crop = observed * scale[:, None] + offset[:, None]
    if groups is None:
        stage1 = fit_landmarks(model, landmarks_crop.to(stage1_dtype), (size, size), config.landmarks)
        energies = {"landmarks/total": stage1.energy, "landmarks/landmarks": stage1.landmark_energy,
                    "landmarks/id_prior": stage1.id_prior, "landmarks/exp_prior": stage1.exp_prior}
    else:
        groups = groups.to(device)
        start = None
        if config.sequence.smooth:
            frame_sizes = torch.tensor([it.image_size for it in items], dtype=stage1_dtype, device=device)
            start = video_camera_start(model, landmarks_crop.to(stage1_dtype), scale.to(stage1_dtype),
                                       offset.to(stage1_dtype), frame_sizes, groups, size, config.landmarks.focal_px)
            start = fit_landmarks(model, landmarks_crop.to(stage1_dtype), (size, size), config.landmarks,
                                  init=start).params
        stage1 = fit_landmarks_sequence(model, landmarks_crop.to(stage1_dtype), (size, size), groups, config.landmarks,
                                        config.sequence, init=start)
        per_frame = groups.frames_per_subject(stage1.energy.dtype)
        energies = {"landmarks/total": stage1.frame_energy(), "landmarks/landmarks": stage1.landmark_energy,
                    "landmarks/id_prior": (stage1.id_prior / per_frame)[groups.subject],
                    "landmarks/exp_prior": stage1.exp_prior,
                    "landmarks/smoothness": (stage1.smoothness / per_frame)[groups.subject]}
    params = stage1.params.map(lambda t: t.to(torch.float32))
    flags = {"diverged": torch.zeros(len(items), dtype=torch.bool, device=device)}
    texture = "texture" in config.stages
    if texture:
        crops = torch.stack([it.crop for it in items]).to(device)
        stage2 = fit_texture(model, crops, landmarks_crop.to(torch.float32), params, config.texture,
                             groups=groups, sequence=config.sequence if groups is not None else None)
        params = stage2.params
        energies.update({"texture/total": stage2.energy, "texture/texture": stage2.texture,
                         "texture/landmarks": stage2.landmarks, "texture/albedo_prior": stage2.albedo_prior,
                         "texture/exp_prior": stage2.exp_prior})
        flags["diverged"] = stage2.diverged.to(device)
    params = params.detach()
    original = replace(params, focal=(params.focal / scale).float(),
                       principal_point=((params.principal_point - offset) / scale).float())
    packed = model.layout.pack(original, include_fitting=texture)
    with torch.no_grad():
        fitted = fitted_landmarks(model, original)
    finite_energy = torch.stack([e.detach().isfinite() for e in energies.values()], -1).all(-1)
    flags["nonfinite"] = ~(finite_energy & packed.isfinite().all(-1) & fitted.isfinite().all(-1).all(-1))
    flags["partial_landmarks"] = ~observed.isfinite().all(-1).all(-1)
    return BatchFit(crop_params=params, params=original, packed=packed, landmarks=fitted,
                     energies={k: v.detach() for k, v in energies.items()}, flags=flags,
                     landmarks_crop=landmarks_crop.float())
