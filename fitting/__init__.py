"""diffface.fitting: morphable-model fitting to landmarks and images (installed as ``diffface.fitting``)."""

from .landmark_fitting import LandmarkFitConfig, LandmarkFitResult, fit_landmarks, initial_parameters

__all__ = ["LandmarkFitConfig", "LandmarkFitResult", "fit_landmarks", "initial_parameters"]
