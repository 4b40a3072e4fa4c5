"""diffface.networks: parameter-regression networks (installed as ``diffface.networks``).

Depends on the diffface core only, so exporting a network never pulls in a renderer (the photometric
loss and the TensorBoard overlays import it lazily).

Example:
    >>> from diffface.networks import create_model, load_checkpoint
    >>> net = create_model("mobileface", width=10)          # the method's regressor, 118 outputs
    >>> regressor = load_checkpoint("run/model.pt")         # weights + config + normalisation + model id
    >>> params = regressor.predict(crops)                   # crops (B, 3, 96, 96) in [0, 1]
"""

from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .losses import (MSEParameterLoss, VertexProjectionLoss, mse_parameter_loss, per_vertex_distance,
                     shape_and_projections, vertex_projection_loss, vertex_subset)
from .mobileface import MobileFace, MobileFaceConfig, count_parameters, fold_batchnorm, mobileface
from .predictor import FaceRegressor, ModelIdentity
from .registry import create_model, list_models
from .train import train

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "FaceRegressor", "MSEParameterLoss", "MobileFace", "MobileFaceConfig",
    "ModelIdentity", "TrainConfig", "VertexProjectionLoss", "count_parameters", "create_model", "fold_batchnorm",
    "list_models", "load_checkpoint", "mobileface", "mse_parameter_loss", "per_vertex_distance", "read_checkpoint",
    "save_checkpoint", "shape_and_projections", "train", "vertex_projection_loss", "vertex_subset",
]
