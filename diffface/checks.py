"""Input checks that name the tensor and the expected shape (kornia style)."""

from __future__ import annotations

from typing import Sequence

import torch


def check_shape(x: torch.Tensor, shape: Sequence[str | int], name: str = "input") -> None:
    """Raise a ``ValueError`` unless ``x`` matches ``shape``.

    Args:
        x: tensor to check.
        shape: expected dimensions; an ``int`` must match exactly, a string is a free symbol
            (the same symbol must have the same size everywhere it appears), ``"*"`` matches any
            number of leading dimensions and must come first.
        name: the tensor's name, used in the message.

    Example:
        >>> check_shape(torch.zeros(2, 5, 3), ["B", "V", 3], "vertices")
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    dims = list(shape)
    actual = list(x.shape)
    if dims and dims[0] == "*":
        dims = dims[1:]
        if len(actual) < len(dims):
            raise ValueError(f"{name} must have shape (*, {', '.join(map(str, dims))}), got {tuple(actual)}")
        actual = actual[len(actual) - len(dims):]
    elif len(actual) != len(dims):
        raise ValueError(f"{name} must have shape ({', '.join(map(str, dims))}), got {tuple(x.shape)}")
    bound: dict[str, int] = {}
    for want, have in zip(dims, actual):
        if isinstance(want, int):
            if want != have:
                raise ValueError(f"{name} must have shape ({', '.join(map(str, shape))}), got {tuple(x.shape)}")
        else:
            if want in bound and bound[want] != have:
                raise ValueError(
                    f"{name} must have shape ({', '.join(map(str, shape))}) with consistent '{want}', "
                    f"got {tuple(x.shape)}"
                )
            bound[want] = have


def check_finite(x: torch.Tensor, name: str = "input") -> None:
    """Raise a ``ValueError`` naming ``name`` if ``x`` holds NaN or infinite values."""
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_same_batch(*named: tuple[str, torch.Tensor]) -> int:
    """Return the shared batch size of several tensors, or raise naming the mismatch."""
    sizes = {name: int(t.shape[0]) for name, t in named}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch sizes differ: {sizes}")
    return next(iter(sizes.values()))
