"""The deployable form of a checkpoint: one graph from crops to final parameters (and vertices).

Everything the exporters share happens here, once: BatchNorm folded into the convolutions, the
parameter normalisation folded into the last linear layer (``W' = diag(σ)·W``, ``b' = σ·b + μ``), the
Python-side input checks dropped (the exported input has a static shape), and, with the mesh head,
the morphable model's shape evaluated as ``S = M + [A_id A_exp]·[α_id; α_exp]`` from buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from diffface.morphable_model import MorphableModel
from diffface.params import ParamLayout, ParamNormalizer

from ..mobileface import MobileFace, fold_batchnorm
from ..predictor import FaceRegressor
from diffface.morphable_model import load_morphable_model
from ..predictor import ModelIdentity
from ..registry import create_model

if TYPE_CHECKING:
    from .config import ExportConfig


def fold_normalizer(linear: nn.Linear, normalizer: ParamNormalizer) -> nn.Linear:
    """A copy of ``linear`` whose outputs are denormalised: ``σ ⊙ (W x + b) + μ``.

    Shape:
        linear: in_features -> N; normalizer: (N,) mean and std.
    """
    if linear.out_features != normalizer.mean.shape[0]:
        raise ValueError(f"the last layer has {linear.out_features} outputs, the normaliser {normalizer.mean.shape[0]}")
    folded = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        std = normalizer.std.to(linear.weight.dtype)
        folded.weight.copy_(linear.weight * std[:, None])
        bias = linear.bias if linear.bias is not None else torch.zeros_like(std)
        folded.bias.copy_(bias * std + normalizer.mean.to(std.dtype))
    return folded


def parameter_graph(network: nn.Module, normalizer: ParamNormalizer) -> nn.Sequential:
    """The network as a plain ``nn.Sequential`` (BatchNorm and normalisation folded), crops -> parameters.

    Shape:
        (B, 3, S, S) in [0, 1] -> (B, N) denormalised parameters.
    """
    if not isinstance(network, MobileFace):
        raise ValueError(f"no export recipe for network {type(network).__name__}; exportable: MobileFace")
    folded = fold_batchnorm(network)
    return nn.Sequential(folded.features, folded.pool, nn.Flatten(1), fold_normalizer(folded.fc, normalizer)).eval()


class MeshHead(nn.Module):
    """Vertices from predicted parameters: ``S = M + A_id·α_id + A_exp·α_exp`` with one matrix product.

    Args:
        model: the morphable model the parameters belong to (its bases are copied into buffers).
        layout: the parameter layout (α_id and α_exp must be adjacent, as :class:`ParamLayout` puts them).

    Shape:
        forward: params (B, P) -> vertices (B, V, 3) in mm.
    """

    def __init__(self, model: MorphableModel, layout: ParamLayout):
        super().__init__()
        ids, exps = layout.slices["alpha_id"], layout.slices["alpha_exp"]
        if ids.stop != exps.start or (model.id_dims, model.exp_dims) != (layout.id_dims, layout.exp_dims):
            raise ValueError(f"layout {layout} does not match the morphable model {model.name!r} "
                             f"({model.id_dims} identity, {model.exp_dims} expression modes)")
        self.start, self.stop = ids.start, exps.stop
        self.register_buffer("mean_shape", model.mean_shape.reshape(1, -1).float().clone())
        self.register_buffer("basis_t", torch.cat([model.id_basis, model.exp_basis], 1).T.float().contiguous())

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        coefficients = params[:, self.start:self.stop]
        return torch.addmm(self.mean_shape, coefficients, self.basis_t).reshape(params.shape[0], -1, 3)


class FaceParametersModel(nn.Module):
    """Deployable regressor: crops -> final parameters. Shape: (B, 3, S, S) -> (B, P)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class FaceMeshModel(nn.Module):
    """Deployable regressor with the mesh head. Shape: (B, 3, S, S) -> ((B, P), (B, V, 3) mm)."""

    def __init__(self, body: nn.Module, mesh: MeshHead):
        super().__init__()
        self.body = body
        self.mesh = mesh

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.body(images)
        return params, self.mesh(params)


@dataclass
class Deployable:
    """What every exporter starts from.

    Attributes:
        module: :class:`FaceParametersModel` or :class:`FaceMeshModel` (eval mode, float32, CPU).
        input_size: side of the square crop.
        output_names: ``("params",)`` or ``("params", "vertices")``.
        param_names: one name per parameter.
        layout: the parameter layout (the parity check compares each group in its own units).
        coefficient_std: ``(K_id + K_exp,)`` σ of each identity and expression coefficient, the unit in which
            the parity check measures their errors.
        coefficient_std_source: where ``coefficient_std`` comes from (the morphable model, or the training
            split's normalisation when the checkpoint's model file cannot be loaded here).
    """

    module: nn.Module
    input_size: int
    output_names: tuple[str, ...]
    param_names: list[str]
    layout: ParamLayout
    coefficient_std: torch.Tensor
    coefficient_std_source: str

    def example_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """Random crops in [0, 1]. Shape: -> (batch, 3, S, S)."""
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch, 3, self.input_size, self.input_size, generator=generator)

    def export_inputs(self, config: "ExportConfig") -> tuple[tuple[torch.Tensor], tuple[dict] | None]:
        """``(args, dynamic_shapes)`` for ``torch.export``-based exporters: a static batch of
        ``config.batch_size``, or a batch dimension of 1..``max_batch`` traced at 2 (at 1, export would
        specialise the dimension to a constant)."""
        if not config.dynamic_batch:
            return (self.example_input(config.batch_size, config.seed),), None
        batch = torch.export.Dim("batch", min=1, max=config.max_batch)
        return (self.example_input(max(2, config.batch_size), config.seed),), ({0: batch},)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Eager outputs as a tuple (the reference of the parity check)."""
        out = self.module(images)
        return out if isinstance(out, tuple) else (out,)


def load_mesh_model(regressor: FaceRegressor) -> MorphableModel:
    """The morphable model a checkpoint names (``model_identity.spec``), checked against its fingerprint."""
    identity = regressor.model_identity
    if not identity.spec:
        raise ValueError("the checkpoint names no morphable-model file; pass the model explicitly")
    return check_mesh_model(regressor, load_morphable_model(identity.spec))


def check_mesh_model(regressor: FaceRegressor, model: MorphableModel) -> MorphableModel:
    """``model``, if it is the one the checkpoint was trained with (same fingerprint), else raise."""
    expected = regressor.model_identity.fingerprint
    if expected and model.fingerprint != expected:
        raise ValueError(f"morphable model {model.name!r} has fingerprint {model.fingerprint}, the checkpoint "
                         f"was trained with {expected}")
    return model


def make_deployable(regressor: FaceRegressor, with_mesh: bool = False,
                    morphable_model: MorphableModel | None = None) -> Deployable:
    """The deployable module of a regressor (BatchNorm and normalisation folded, optional mesh head).

    Example:
        >>> deployable = make_deployable(load_checkpoint("run/model.pt"), with_mesh=True)
        >>> params, vertices = deployable.module(crops)
    """
    body = parameter_graph(regressor.network, regressor.normalizer).float().cpu()
    layout = regressor.layout
    if morphable_model is not None:
        model = check_mesh_model(regressor, morphable_model)
    elif with_mesh:
        model = load_mesh_model(regressor)
    else:
        try:  # only for the σ of the parity check: a params-only export must not need the model file
            model = load_mesh_model(regressor)
        except (OSError, ValueError) as exc:
            model, reason = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if model is not None:
        std = torch.cat([model.id_std, model.exp_std]).float().cpu()
        source = f"prior sigma of the morphable model {model.name!r}"
    else:
        coefficients = slice(layout.slices["alpha_id"].start, layout.slices["alpha_exp"].stop)
        std = regressor.normalizer.std[coefficients].float().cpu()
        source = f"training split's standard deviation (morphable model not loadable: {reason})"
    std = torch.where(std > 0, std, torch.ones_like(std))  # a mode with σ = 0 is measured in model units
    if not with_mesh:
        module: nn.Module = FaceParametersModel(body).eval()
        outputs: tuple[str, ...] = ("params",)
    else:
        module, outputs = FaceMeshModel(body, MeshHead(model, layout)).eval(), ("params", "vertices")
    return Deployable(module, regressor.input_size, outputs, layout.names(), layout, std, source)


@torch.no_grad()
def calibrate_batchnorm(network: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``images`` and put ``network`` in eval mode.

    With PyTorch's default initialisation and the running statistics at (0, 1), each layer of a deep
    untrained network shrinks its input, and MobileFace's output no longer depends on the image (its
    spread across inputs is about 1e-9 of its size): a parity check on it would only test the last
    layer. Calibrated, every normalised activation has unit variance on ``images``, as after training.

    Shape:
        images: (N, 3, S, S).
    """
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0  # the running statistics become the batch's (also for PooledBatchNorm2d's lerp)
    network.train()(images)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return network.eval()


def fresh_regressor(width: int = 10, seed: int = 0, model_spec: str = "builtin") -> FaceRegressor:
    """A freshly initialised MobileFace regressor (identity normalisation, BatchNorm calibrated on random crops
    so that its outputs depend on the input) for the morphable model ``model_spec``: what ``diffface bench
    network`` times and checks for parity without a checkpoint (latency does not depend on the weights)."""
    model = load_morphable_model(model_spec)
    torch.manual_seed(seed)
    network = create_model("mobileface", width=width, num_outputs=model.layout.network_size)
    calibrate_batchnorm(network, torch.rand(16, 3, network.config.input_size, network.config.input_size))
    size = model.layout.network_size
    return FaceRegressor(network, ParamNormalizer(torch.zeros(size), torch.ones(size)), model.layout,
                         ModelIdentity(model.name, model.fingerprint, str(model_spec)), "mobileface",
                         {"width": width, "num_outputs": size}, network.config.input_size).eval()
