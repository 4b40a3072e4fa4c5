"""diffface: monocular 3D face reconstruction around a differentiable renderer.

Core modules: :mod:`~diffface.morphable_model`, :mod:`~diffface.params`, :mod:`~diffface.camera`,
:mod:`~diffface.lighting`, :mod:`~diffface.geometry`, :mod:`~diffface.model_format`,
:mod:`~diffface.loaders`. Sub-packages: ``diffface.renderers``, ``diffface.fitting``,
``diffface.networks``.
"""

__version__ = "0.1.0"

from .camera import (PerspectiveCamera, euler_to_rotation, from_opencv, intrinsic_matrix, perspective_project,
                     project_points, rotation_to_euler, to_opencv, world_to_camera)
from .geometry import VertexNormals, face_normals, vertex_normals
from .lighting import SHLighting, ambient_sh_coefficients, sh_basis, sh_irradiance, sh_shading
from .model_format import MorphableModelData, ModelFormatError, load_model_npz, save_model_npz
from .morphable_model import MorphableModel, gaussian_prior, linear_model, load_model_data, load_morphable_model
from .params import FaceParameters, ParamLayout, ParamNormalizer

__all__ = [
    "FaceParameters", "ModelFormatError", "MorphableModel", "MorphableModelData", "ParamLayout",
    "ParamNormalizer", "PerspectiveCamera", "SHLighting", "VertexNormals", "ambient_sh_coefficients",
    "euler_to_rotation", "face_normals", "from_opencv", "gaussian_prior", "intrinsic_matrix", "linear_model",
    "load_model_data", "load_model_npz", "load_morphable_model", "perspective_project", "project_points",
    "rotation_to_euler", "save_model_npz", "sh_basis", "sh_irradiance", "sh_shading", "to_opencv",
    "vertex_normals", "world_to_camera",
]
