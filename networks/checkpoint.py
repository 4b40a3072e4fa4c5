"""Checkpoints that carry their own config: a file alone is enough to run the network.

A checkpoint is a ``torch.save`` dictionary of plain values and tensors (it loads with
``weights_only=True``, so no code runs on load):

==================  ==========================================================================
key                 value
==================  ==========================================================================
``format``          :data:`CHECKPOINT_FORMAT`
``network``         ``{"name": registry name, "config": create_model settings}``
``state_dict``      the network's weights (BatchNorm unfolded)
``normalizer``      ``{"mean": (P,), "std": (P,)}``, the training split's parameter statistics
``layout``          ``{"id_dims", "exp_dims", "tex_dims"}`` and ``param_names`` (P names)
``morphable_model`` ``{"name", "fingerprint", "spec"}``
``input``           ``{"size": S, "channels": "RGB", "range": [0, 1]}``
``step``            optimisation steps done
``train_config``    the resolved training settings (dict), or None
``dataset``         optional: ``{"path", "fingerprint"}`` of the training dataset
                    (:func:`~diffface.data.format.dataset_fingerprint`), which a resumed run must keep
``training_state``  only in ``RUN/checkpoints/last.pt``: optimizer, scheduler and RNG states for resuming
==================  ==========================================================================
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffface.atomic_io import atomic_write
from diffface.params import ParamLayout, ParamNormalizer

from .predictor import FaceRegressor, ModelIdentity
from .registry import create_model

CHECKPOINT_FORMAT = "diffface-network/1"
REQUIRED_KEYS = ("format", "network", "state_dict", "normalizer", "layout", "morphable_model", "input", "step")


class CheckpointError(ValueError):
    """A file is not a readable diffface network checkpoint."""


def checkpoint_dict(regressor: FaceRegressor, step: int, train_config: dict | None = None,
                    training_state: dict | None = None, dataset: dict | None = None) -> dict:
    """The dictionary :func:`save_checkpoint` writes."""
    layout = regressor.layout
    return {
        "format": CHECKPOINT_FORMAT,
        "network": {"name": regressor.network_name, "config": dict(regressor.network_config)},
        "state_dict": {k: v.detach().cpu() for k, v in regressor.network.state_dict().items()},
        "normalizer": {"mean": regressor.normalizer.mean.detach().cpu(), "std": regressor.normalizer.std.detach().cpu()},
        "layout": {"id_dims": layout.id_dims, "exp_dims": layout.exp_dims, "tex_dims": layout.tex_dims},
        "param_names": layout.names(),
        "morphable_model": {"name": regressor.model_identity.name, "fingerprint": regressor.model_identity.fingerprint,
                            "spec": regressor.model_identity.spec},
        "input": {"size": regressor.input_size, "channels": "RGB", "range": [0.0, 1.0]},
        "step": int(step),
        "train_config": train_config,
        "training_state": training_state,
        "dataset": dataset,
    }


def save_checkpoint(path: str | Path, regressor: FaceRegressor, step: int, train_config: dict | None = None,
                    training_state: dict | None = None, dataset: dict | None = None) -> Path:
    """Write a checkpoint atomically (a kill mid-write leaves the previous file intact).

    Example:
        >>> save_checkpoint("run/model.pt", regressor, step=30000, train_config=config.to_dict())
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        torch.save(checkpoint_dict(regressor, step, train_config, training_state, dataset), handle)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint's dictionary; a missing, corrupt or foreign file, or non-finite weights, raise naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for a damaged file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        # torch's messages span many lines; the CLI prints one line per error
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first_line})") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a diffface network checkpoint (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    _check_finite(path, data)
    return data


def _check_finite(path: Path, data: dict) -> None:
    """Raise naming the first weight or statistic holding NaN or infinity (a diverged run saves such files)."""
    for group in ("state_dict", "normalizer"):
        if not isinstance(data[group], dict):
            continue  # malformed: regressor_from_checkpoint names it
        for key, value in data[group].items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise CheckpointError(f"{path}: tensor {group}.{key} has {bad} non-finite value(s) (NaN or infinity) "
                                      f"of {value.numel()}; did the training that saved it diverge?")


def regressor_from_checkpoint(data: dict, source: str = "checkpoint") -> FaceRegressor:
    """Rebuild the :class:`FaceRegressor` of a checkpoint dictionary (eval mode)."""
    try:
        network = create_model(data["network"]["name"], **data["network"]["config"])
        network.load_state_dict(data["state_dict"])
        layout = ParamLayout(**data["layout"])
        normalizer = ParamNormalizer(data["normalizer"]["mean"], data["normalizer"]["std"])
        identity = ModelIdentity(**data["morphable_model"])
        regressor = FaceRegressor(network, normalizer, layout, identity, data["network"]["name"],
                                  data["network"]["config"], data["input"]["size"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        # load_state_dict lists every mismatched tensor on its own line; the CLI prints one line per error
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: inconsistent checkpoint ({first_line})") from exc
    return regressor.eval()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> FaceRegressor:
    """A ready-to-run :class:`FaceRegressor` (eval mode) from a checkpoint file.

    Example:
        >>> regressor = load_checkpoint("run/model.pt")
        >>> p = regressor(crops)                       # (B, 118), unnormalised
    """
    data = read_checkpoint(path, map_location)
    regressor = regressor_from_checkpoint(data, str(path))
    regressor.step = int(data["step"])
    regressor.train_config = data.get("train_config")
    return regressor
