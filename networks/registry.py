"""The network registry (as in timm): ``create_model(name, **settings)`` and ``list_models()``.

The table is filled once, at import, from the constructors below and never changed afterwards.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .mobileface import mobileface

_MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobileface": mobileface,
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_MODELS)


def create_model(name: str, **settings) -> nn.Module:
    """Build a registered network.

    Args:
        name: one of :func:`list_models` (``"mobileface"``).
        settings: the constructor's keyword settings, e.g. ``width=16`` or ``num_outputs=78``.

    Example:
        >>> net = create_model("mobileface", width=16)
    """
    if name not in _MODELS:
        raise ValueError(f"unknown network {name!r}; registered networks: {', '.join(list_models())}")
    try:
        return _MODELS[name](**settings)
    except TypeError as exc:
        raise ValueError(f"network {name!r}: bad settings {settings} ({exc})") from exc
