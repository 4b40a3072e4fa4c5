"""Choose a landmark source by name: ``fan``, ``dlib``, ``pts`` or ``auto``."""

from __future__ import annotations

from .detection import LandmarkDetector
from .fan import FANDetector

DETECTORS = ("auto", "fan", "dlib", "pts")


def make_detector(name: str = "auto", **options) -> LandmarkDetector:
    """A :class:`LandmarkDetector` by name.

    ``auto`` is FAN (the method's detector) when its weights are present, else dlib. Options go to
    the chosen class (``weights=``, ``device=`` for FAN; ``predictor_path=``, ``upsample=`` for dlib;
    ``annotation_dir=`` for pts).

    Raises:
        ValueError: an unknown name. ImportError / FileNotFoundError: the backend or its weights are
        missing (the message says how to get them).
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown landmark detector {name!r}; choose one of {DETECTORS}")
    if name == "pts":
        from .annotations import AnnotationDetector

        return AnnotationDetector(**options)
    if name == "dlib":
        from .dlib_detector import DlibDetector

        return DlibDetector(**options)

    if name == "fan":
        return FANDetector(**options)
    try:
        return FANDetector(**options)
    except (ImportError, FileNotFoundError) as fan_error:
        from .dlib_detector import DlibDetector

        try:
            return DlibDetector()
        except (ImportError, FileNotFoundError) as dlib_error:
            raise FileNotFoundError(f"no landmark detector is usable: FAN: {fan_error}; dlib: {dlib_error}") from dlib_error
