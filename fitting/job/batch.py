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

from ..landmark_fitting import fit_landmarks
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


def fit_batch(model: MorphableModel, items: list[FitItem], config: FitJobConfig, device: torch.device) -> BatchFit:
    size = config.image_size
    # stage 1 touches a few hundred vertices only, so float64 costs nothing and makes each image's fit
    # independent of the batch it shares (in float32 the LM steps amplify rounding to ~1e-2 in α)
    stage1_dtype = torch.float64 if config.landmarks_float64 else torch.float32
    observed = torch.from_numpy(np.stack([it.landmarks for it in items])).to(device, torch.float64)
    matrix = torch.from_numpy(np.stack([it.crop_matrix for it in items])).to(device, torch.float64)
    scale, offset = matrix[:, 0, :1], matrix[:, :2, 2]
    landmarks_crop = observed * scale[:, None] + offset[:, None]
    stage1 = fit_landmarks(model, landmarks_crop.to(stage1_dtype), (size, size), config.landmarks)
    params = stage1.params.map(lambda t: t.to(torch.float32))
    energies = {"landmarks/total": stage1.energy, "landmarks/landmarks": stage1.landmark_energy,
                "landmarks/id_prior": stage1.id_prior, "landmarks/exp_prior": stage1.exp_prior}
    flags = {"diverged": torch.zeros(len(items), dtype=torch.bool, device=device)}
    texture = "texture" in config.stages
    if texture:
        crops = torch.stack([it.crop for it in items]).to(device)
        stage2 = fit_texture(model, crops, landmarks_crop.to(torch.float32), params, config.texture)
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
