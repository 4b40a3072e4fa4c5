"""Fit the real Surrey model to the real photo in shared/ (smoke test on real data; nothing is tuned to it)."""

import numpy as np
import torch

from diffface.fitting import LandmarkFitConfig, TextureFitConfig, fit_landmarks, fit_texture
from diffface.landmark_io import read_pts
from diffface.landmarks import read_image
from diffface.loaders import load_any_model
from diffface.morphable_model import MorphableModel
from diffface.landmark_marching import project_landmarks


def test_surrey_model_fits_image_0010(shared_data):
    model = MorphableModel(load_any_model(shared_data / "sfm" / "sfm_3448.npz"))
    image = read_image(shared_data / "faces" / "image_0010.png")
    observed = torch.from_numpy(read_pts(shared_data / "faces" / "image_0010.pts")).float()[None]
    height, width = image.shape[:2]
    config = LandmarkFitConfig(focal_px=float(max(height, width)))  # a typical photo's field of view
    fit = fit_landmarks(model, observed, (height, width), config)
    fitted, _ = project_landmarks(model, fit.params)
    defined = model.landmark_mask
    error_px = (fitted[0] - observed[0]).norm(dim=-1)[defined]
    interocular = float((observed[0, 36] - observed[0, 45]).norm())
    nme = float(error_px.mean()) / interocular
    print(f"Surrey model on image_0010: landmark error {float(error_px.mean()):.2f} px mean, "
          f"{100 * nme:.2f} % of the inter-ocular distance ({interocular:.0f} px)")
    assert nme < 0.08
    assert abs(float(fit.params.angles[0, 1])) < 0.6  # a near-frontal photo: yaw well under 35°

    # stage 2 (SFM has no albedo model: lighting, pose and shape move) does not lose the landmarks
    images = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    stage2 = fit_texture(model, images, observed, fit.params, TextureFitConfig(rounds=1, steps_per_group=2))
    refitted, _ = project_landmarks(model, stage2.params)
    assert float((refitted[0] - observed[0]).norm(dim=-1)[defined].mean()) / interocular < nme + 0.02
    assert torch.isfinite(stage2.energy).all() and not stage2.diverged.any()
