"""Ranks of a multi-process job (``torchrun``): the rank from the environment, and gloo for the few collectives."""

from __future__ import annotations

import os


def world_from_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(world: int) -> bool:
    """Start gloo when there are several ranks; True when this call started it (and must end it)."""
    import torch.distributed as dist

    if world <= 1 or dist.is_initialized():
        return False
    # gloo carries only a barrier and small Python objects, so it serves CPU and CUDA jobs alike
    dist.init_process_group("gloo")
    return True


def barrier(world: int) -> None:
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        dist.barrier()


def gather(obj, world: int) -> list:
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out
    return [obj]
