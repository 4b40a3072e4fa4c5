"""Torch's intra-op CPU threads for one block of code, restored afterwards."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int | None):
    """Run the block with ``threads`` intra-op threads (``None`` or 0: leave the setting alone), then put
    the previous count back, so no lasting global change is made. The setting is per process: do not
    use it from several Python threads at once.

    Example:
        >>> with torch_threads(1):
        ...     result = fit_landmarks(model, landmarks, (224, 224))
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(previous)
