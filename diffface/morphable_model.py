"""The morphable model as a PyTorch module: ``S = M + A_id·α_id + A_exp·α_exp``, ``T = T0 + B·β``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checks import check_shape
from .model_format import MorphableModelData, load_model_npz
from .params import FaceParameters, ParamLayout
from .loaders import load_any_model
from .model_format import is_canonical_npz

BUILTIN_NAME = "builtin"


def linear_model(mean: torch.Tensor, basis: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """``mean + basis · coefficients`` for a batch, reshaped to per-vertex vectors.

    Args:
        mean: the mean, flattened vertex-major.
        basis: the modes as columns, flattened vertex-major (``(V, 3, K)`` reshaped).
        coefficients: per-sample mode weights.

    Shape:
        mean: (V, 3); basis: (3V, K); coefficients: (B, K) -> (B, V, 3).

    Example:
        >>> linear_model(torch.zeros(2, 3), torch.eye(6)[:, :2], torch.tensor([[1., 2.]]))
        tensor([[[1., 2., 0.],
                 [0., 0., 0.]]])
    """
    check_shape(mean, ["V", 3], "mean")
    check_shape(basis, [mean.shape[0] * 3, "K"], "basis")
    check_shape(coefficients, ["B", basis.shape[1]], "coefficients")
    if basis.shape[1] == 0:
        return mean.expand(coefficients.shape[0], -1, -1).clone()
    flat = torch.addmm(mean.reshape(1, -1), coefficients, basis.T)
    return flat.reshape(coefficients.shape[0], -1, 3)


def gaussian_prior(coefficients: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Negative log Gaussian prior up to a constant: ``Σ_k (c_k / σ_k)²`` per sample.

    Modes with ``σ = 0`` are ignored. Shape: coefficients (B, K); std (K,) -> (B,).
    """
    check_shape(coefficients, ["B", std.shape[0]], "coefficients")
    safe = torch.where(std > 0, std, torch.ones_like(std))
    weight = (std > 0).to(coefficients.dtype)
    return ((coefficients / safe) ** 2 * weight).sum(-1)


class MorphableModel(nn.Module):
    """A linear morphable model of shape, expression and albedo, with landmarks and contours.

    Build it from a :class:`~diffface.model_format.MorphableModelData` or with
    :func:`load_morphable_model` (``"builtin"`` or a model file).

    Buffers:
        mean_shape (V, 3), id_basis (3V, K_id), id_std (K_id,), exp_basis (3V, K_exp),
        exp_std (K_exp,), albedo_mean (V, 3), albedo_basis (3V, K_tex), albedo_std (K_tex,),
        triangles (F, 3) long, uv (V, 2), landmark_indices (68,) long (-1: undefined),
        contour_landmarks (C,) long, contour_lines (C, K) long (-1: padding).

    Shape:
        forward(alpha_id (B, K_id), alpha_exp (B, K_exp), beta (B, K_tex) or None)
        -> vertices (B, V, 3), albedo (B, V, 3).

    Example:
        >>> model = load_morphable_model("builtin")
        >>> vertices, albedo = model(torch.zeros(2, model.id_dims), torch.zeros(2, model.exp_dims))
    """

    def __init__(self, data: MorphableModelData):
        super().__init__()
        data = data.canonical().validate()
        V = data.num_vertices

        def f32(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        def i64(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

        self.register_buffer("mean_shape", f32(data.mean_shape))
        self.register_buffer("id_basis", f32(data.id_basis).reshape(3 * V, -1))
        self.register_buffer("id_std", f32(data.id_std))
        self.register_buffer("exp_basis", f32(data.exp_basis).reshape(3 * V, -1))
        self.register_buffer("exp_std", f32(data.exp_std))
        self.register_buffer("albedo_mean", f32(data.albedo_mean))
        albedo_basis = data.albedo_basis if data.has_albedo else data.albedo_basis[:, :, :0]
        albedo_std = data.albedo_std if data.has_albedo else data.albedo_std[:0]
        self.register_buffer("albedo_basis", f32(albedo_basis).reshape(3 * V, -1))
        self.register_buffer("albedo_std", f32(albedo_std))
        self.register_buffer("triangles", i64(data.triangles))
        self.register_buffer("uv", f32(data.uv))
        self.register_buffer("landmark_indices", i64(data.landmark_indices))
        self.register_buffer("contour_landmarks", i64(data.contour_landmarks))
        self.register_buffer("contour_lines", i64(data.contour_lines))
        self.name = data.name
        self.source = data.source
        self.has_albedo = bool(data.has_albedo)
        self.metadata = dict(data.metadata)
        self.fingerprint = _fingerprint(data)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def id_dims(self) -> int:
        return int(self.id_basis.shape[1])

    @property
    def exp_dims(self) -> int:
        return int(self.exp_basis.shape[1])

    @property
    def tex_dims(self) -> int:
        return int(self.albedo_basis.shape[1])

    @property
    def layout(self) -> ParamLayout:
        """The named parameter layout for this model's dimensions."""
        return ParamLayout(self.id_dims, self.exp_dims, self.tex_dims)

    @property
    def landmark_mask(self) -> torch.Tensor:
        """(68,) bool: which iBUG landmarks this model defines."""
        return self.landmark_indices >= 0

    # -- evaluation --------------------------------------------------------------------------
    def shape(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
        """Vertices ``M + A_id·α_id + A_exp·α_exp``. Shape: (B, K_id), (B, K_exp) -> (B, V, 3)."""
        check_shape(alpha_id, ["B", self.id_dims], "alpha_id")
        check_shape(alpha_exp, ["B", self.exp_dims], "alpha_exp")
        identity = linear_model(self.mean_shape, self.id_basis, alpha_id)
        if self.exp_dims == 0:
            return identity
        return identity + (alpha_exp @ self.exp_basis.T).reshape(identity.shape)

    def albedo(self, beta: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
        """Albedo ``T0 + B·β`` (RGB in [0, 1] near the mean). Shape: (B, K_tex) -> (B, V, 3).

        With ``beta=None`` the mean albedo is returned for ``batch`` samples.
        """
        if beta is None:
            return self.albedo_mean.expand(batch or 1, -1, -1)
        return linear_model(self.albedo_mean, self.albedo_basis, beta)

    def forward(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor,
                beta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        vertices = self.shape(alpha_id, alpha_exp)
        return vertices, self.albedo(beta, batch=vertices.shape[0])

    def from_parameters(self, params: FaceParameters) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertices and albedo for a :class:`~diffface.params.FaceParameters` batch."""
        return self(params.alpha_id, params.alpha_exp, params.beta)

    def landmarks(self, vertices: torch.Tensor) -> torch.Tensor:
        """The 68 landmark vertices (undefined ones are NaN). Shape: (B, V, 3) -> (B, 68, 3)."""
        check_shape(vertices, ["B", self.num_vertices, 3], "vertices")
        picked = vertices[:, self.landmark_indices.clamp_min(0)]
        return torch.where(self.landmark_mask[None, :, None], picked, torch.full_like(picked, float("nan")))

    def prior(self, params: FaceParameters) -> dict[str, torch.Tensor]:
        """Gaussian prior energies ``Σ (c/σ)²`` per group present. Each value: (B,)."""
        out = {"id": gaussian_prior(params.alpha_id, self.id_std),
               "exp": gaussian_prior(params.alpha_exp, self.exp_std)}
        if params.beta is not None:
            out["tex"] = gaussian_prior(params.beta, self.albedo_std)
        return out

    def sample_coefficients(self, batch: int, scale: float = 1.0,
                            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random ``(α_id, α_exp, β)`` from the Gaussian priors, σ multiplied by ``scale``."""
        def draw(std: torch.Tensor) -> torch.Tensor:
            noise = torch.randn(batch, std.shape[0], generator=generator, dtype=std.dtype)
            return (noise * std.cpu() * scale).to(std.device)
        return draw(self.id_std), draw(self.exp_std), draw(self.albedo_std)

    def to_data(self) -> MorphableModelData:
        """Back to numpy arrays (for saving with :func:`~diffface.model_format.save_model_npz`)."""
        V = self.num_vertices

        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        return MorphableModelData(
            mean_shape=np_(self.mean_shape), id_basis=np_(self.id_basis).reshape(V, 3, -1), id_std=np_(self.id_std),
            exp_basis=np_(self.exp_basis).reshape(V, 3, -1), exp_std=np_(self.exp_std),
            albedo_mean=np_(self.albedo_mean), albedo_basis=np_(self.albedo_basis).reshape(V, 3, -1),
            albedo_std=np_(self.albedo_std), triangles=np_(self.triangles), uv=np_(self.uv),
            landmark_indices=np_(self.landmark_indices), contour_landmarks=np_(self.contour_landmarks),
            contour_lines=np_(self.contour_lines), has_albedo=self.has_albedo, name=self.name,
            source=self.source, metadata=dict(self.metadata),
        )

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, vertices={self.num_vertices}, faces={self.triangles.shape[0]}, "
                f"id={self.id_dims}, exp={self.exp_dims}, tex={self.tex_dims}")


def _fingerprint(data: MorphableModelData) -> str:
    """A short hash identifying the model's topology and bases (stored in checkpoints)."""
    digest = hashlib.sha256()
    for array in (data.mean_shape, data.triangles, data.id_basis, data.exp_basis, data.landmark_indices):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def load_model_data(spec: str | Path) -> MorphableModelData:
    """``"builtin"`` -> the procedural model; a canonical ``.npz`` -> read it; any other supported
    file (BFM, Surrey, 3DDFA, ...) -> converted on the fly (see ``diffface convert-model``)."""
    if str(spec) == BUILTIN_NAME:
        from .builtin_model import build_builtin_model

        return build_builtin_model()

    path = Path(spec)
    if path.suffix == ".npz" and is_canonical_npz(path):
        return load_model_npz(path)

    return load_any_model(path)


def load_morphable_model(spec: str | Path = BUILTIN_NAME) -> MorphableModel:
    """A :class:`MorphableModel` from ``"builtin"`` or a model file."""
    return MorphableModel(load_model_data(spec))
