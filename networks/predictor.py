"""The regressor a checkpoint loads into: the network plus the dataset's parameter statistics.

:class:`FaceRegressor` maps face crops to *unnormalised* parameter vectors in the crop's camera
(focal length and principal point in crop pixels), ready for :meth:`ParamLayout.unpack`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffface.params import FaceParameters, ParamLayout, ParamNormalizer


@dataclass(frozen=True)
class ModelIdentity:
    """The morphable model a network's parameters belong to.

    Attributes:
        name: the model's name (``"builtin"``, ...).
        fingerprint: :attr:`MorphableModel.fingerprint` (topology and bases).
        spec: how training loaded it (``"builtin"`` or the model file's path), a hint for prediction.
    """

    name: str
    fingerprint: str
    spec: str = ""


class FaceRegressor(nn.Module):
    """Network + denormalisation: face crops in, named parameters out.

    Args:
        network: a registered network whose output is the normalised parameter vector.
        normalizer: the training split's per-parameter mean and std.
        layout: the parameter layout of the morphable model.
        model_identity: which morphable model the parameters belong to.
        network_name, network_config: how to rebuild ``network`` (:func:`create_model`).
        input_size: side of the square crop the network expects (pixels; RGB in [0, 1]).

    Shape:
        forward: (B, 3, S, S) -> (B, P) unnormalised; predict: (B, 3, S, S) -> FaceParameters.

    Example:
        >>> regressor = load_checkpoint("run/model.pt")
        >>> params = regressor.predict(crops)          # crops (B, 3, 96, 96) in [0, 1]
    """

    def __init__(self, network: nn.Module, normalizer: ParamNormalizer, layout: ParamLayout,
                 model_identity: ModelIdentity, network_name: str, network_config: dict, input_size: int):
        super().__init__()
        if normalizer.mean.shape[0] != layout.network_size:
            raise ValueError(f"normalizer has {normalizer.mean.shape[0]} entries, layout {layout} needs "
                             f"{layout.network_size}")
        self.network = network
        self.normalizer = normalizer
        self.layout = layout
        self.model_identity = model_identity
        self.network_name = network_name
        self.network_config = dict(network_config)
        self.input_size = int(input_size)
        self.step = 0  # optimisation steps behind the weights (set by load_checkpoint)
        self.train_config: dict | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalizer.denormalize(self.network(images))

    @torch.inference_mode()
    def predict(self, images: torch.Tensor, batch_size: int = 128) -> FaceParameters:
        """Unnormalised, named parameters of a batch of crops, in chunks of ``batch_size`` (eval mode)."""
        was_training = self.training
        self.eval()
        try:
            chunks = [self(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)]
        finally:
            self.train(was_training)
        return self.layout.unpack(torch.cat(chunks))
