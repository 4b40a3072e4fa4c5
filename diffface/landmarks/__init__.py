"""68-point iBUG landmarks from three sources, and square face crops.

* :class:`FANDetector` (face-alignment, the method's detector; weights from a local file or cache),
* :class:`DlibDetector` (dlib's HOG detector + 68-point predictor, offline),
* :class:`AnnotationDetector` (``.pts`` / ``.npy`` / ``.json`` files beside the images),

all behind :class:`LandmarkDetector` (``detect`` → every :class:`FaceDetection` of an image,
``detect_batch`` → ``(N, 68, 2)`` landmarks and ``(N, 4)`` boxes); :func:`crop_faces` cuts square
crops and returns the :class:`CropTransform` that moves landmarks and intrinsics with them;
:class:`LandmarkTracker` follows a face along a video, running the face detector only when needed.
Heavy backends are imported only when their class is built.
"""

from .annotations import (AnnotationDetector, annotation_path, read_landmark_file, write_landmarks_json,
                          write_landmarks_npy)
from .batch import LandmarkJobConfig, landmark_images
from .crop import CropTransform, FaceCropper, boxes_from_landmarks, crop_faces, crop_transform, square_boxes
from .detection import (FaceDetection, LandmarkDetector, NoFaceError, NUM_LANDMARKS, box_from_landmarks,
                        check_rgb_image, largest_face, select_faces)
from .fan import FANDetector, WeightsNotFoundError
from .dlib_detector import DlibDetector
from .factory import DETECTORS, make_detector
from .images import (DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, ImageScan, left_out_note, list_images, read_image,
                     scan_image_folder)
from .limits import InputLimits, check_face_input, check_image_size
from .tracking import LandmarkTracker, TrackingConfig, box_iou, box_landmarker

__all__ = [
    "AnnotationDetector", "CropTransform", "DEFAULT_MAX_IMAGE_PIXELS", "DETECTORS", "DlibDetector", "FANDetector",
    "WeightsNotFoundError", "check_rgb_image", "FaceCropper", "FaceDetection", "ImageReadError", "ImageScan",
    "InputLimits", "LandmarkDetector", "LandmarkJobConfig", "LandmarkTracker", "TrackingConfig", "NUM_LANDMARKS",
    "NoFaceError", "annotation_path", "box_from_landmarks", "box_iou", "box_landmarker", "boxes_from_landmarks",
    "check_face_input", "check_image_size", "crop_faces", "crop_transform", "landmark_images", "largest_face",
    "left_out_note", "list_images", "make_detector", "read_image", "read_landmark_file", "scan_image_folder",
    "select_faces", "square_boxes", "write_landmarks_json", "write_landmarks_npy",
]
