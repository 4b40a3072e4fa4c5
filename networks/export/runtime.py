"""A loaded exported model, whatever its runtime: a callable from a torch batch to a tuple of torch outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Runner:
    """An exported model loaded in its runtime.

    Attributes:
        run: images (B, 3, S, S) float32 CPU tensor -> tuple of outputs ((B, P), and (B, V, 3) with the mesh).
        batch: the static batch the file was exported with, or None when any batch runs.
        name: what runs it (e.g. ``"onnxruntime 1.32.0 CPUExecutionProvider"``).
    """

    run: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    batch: int | None
    name: str

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run any number of images, in chunks of the static batch (the last one padded) when there is one."""
        if self.batch is None or images.shape[0] == self.batch:
            return tuple(self.run(images))
        chunks = []
        for start in range(0, images.shape[0], self.batch):
            chunk = images[start:start + self.batch]
            count = chunk.shape[0]
            if count < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros(self.batch - count, *chunk.shape[1:])])
            chunks.append(tuple(out[:count] for out in self.run(chunk)))
        return tuple(torch.cat(parts) for parts in zip(*chunks))


def module_runner(module, name: str, batch: int | None = None, device: str = "cpu") -> Runner:
    """A :class:`Runner` of a callable torch module (eager, TorchScript, lite interpreter, TensorRT modules):
    inputs moved to ``device``, outputs as a tuple of float32 CPU tensors."""

    @torch.inference_mode()
    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = module(images.float().to(device))
        return tuple(o.float().cpu() for o in (out if isinstance(out, (tuple, list)) else (out,)))

    return Runner(run, batch, name)
