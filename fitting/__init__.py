"""diffface.fitting: morphable-model fitting to landmarks and images (installed as ``diffface.fitting``).

Stage 1 (:func:`fit_landmarks`) fits pose, identity and expression to 68 landmarks; stage 2
(:func:`fit_texture`) adds the image's colours in the model's UV frame (or, with ``term="image"``, in the
photo's pixels through the rasterizer), with albedo and SH lighting;
:func:`fit_two_stage` runs both.
"""

from .landmark_fitting import LandmarkFitConfig, LandmarkFitResult, fit_landmarks, initial_parameters
from .texture_fitting import NORMS, TextureFitConfig, TextureFitResult, fit_texture, fit_two_stage, texture_norm

__all__ = ["LandmarkFitConfig", "LandmarkFitResult", "NORMS", "TextureFitConfig", "TextureFitResult",
           "fit_landmarks", "fit_texture", "fit_two_stage", "initial_parameters", "texture_norm"]
