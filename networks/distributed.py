"""Data-parallel training under ``torchrun``: process groups and BatchNorm over the global batch.

DistributedDataParallel averages gradients, but BatchNorm would still normalise each rank's shard
with the shard's own statistics, so ``W`` ranks would not train the network one process trains on the
same global batch. :class:`PooledBatchNorm2d` pools the batch statistics over all ranks (an
autograd-aware all-reduce of per-channel sums), which works with gloo on CPU, where
``nn.SyncBatchNorm`` does not. Its state dict is that of ``nn.BatchNorm2d``, so checkpoints are plain.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn


def world_from_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (0, 1, 0 without it)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_process_group(world_size: int, device: torch.device) -> bool:
    """Start NCCL (CUDA) or gloo (CPU) when there are several ranks; True when this call started it."""
    import torch.distributed as dist

    if world_size <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def _several_ranks() -> bool:
    """Whether a process group with more than one rank is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks (differentiable) when a process group with several ranks is running."""
    if _several_ranks():
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(x)
    return x


def rank_mean_denominator(count: torch.Tensor) -> torch.Tensor:
    """The denominator that makes a per-rank mean train like one process: ``count`` (detached) summed over
    the ranks and divided by their number. DistributedDataParallel averages the ranks' gradients, so each
    rank's ``Σ_rank x / rank_mean_denominator(n_rank)`` has the gradient average of one process's
    ``Σ_all x / n_all`` (dividing by the rank's own count would average the ranks' ratios instead).
    Without several ranks it is ``count``. Shape: () -> ()."""
    count = count.detach().clone()
    if not _several_ranks():
        return count
    import torch.distributed as dist

    dist.all_reduce(count)
    return count / dist.get_world_size()


def pooled_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm in training mode with statistics over the batch of all ranks; updates ``bn``'s running stats.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W).
    """
    channels = x.shape[1]
    local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)),
                       x.new_full((1,), x.numel() / channels)])
    total = _pooled(local)
    count = total[-1]
    mean = total[:channels] / count
    var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        bn.running_mean.lerp_(mean.detach(), bn.momentum)
        bn.running_var.lerp_(var.detach() * count / (count - 1).clamp_min(1), bn.momentum)
    scale = bn.weight * torch.rsqrt(var + bn.eps)
    return x * scale[None, :, None, None] + (bn.bias - mean * scale)[None, :, None, None]


class PooledBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose training-mode statistics cover the batch of every rank (see the module
    docstring); identical to ``nn.BatchNorm2d`` in eval mode. Shape: (B, C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if not _several_ranks():
            # one rank: the batch is the global batch, and the fused kernel (forward and backward) is
            # several times faster than the pooled sums; the two agree to rounding (tests)
            self.num_batches_tracked.add_(1)
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                                self.momentum, self.eps)
        return pooled_batch_norm(x, self)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap every ``nn.BatchNorm2d`` for one that normalises over all ranks, in place: ``nn.SyncBatchNorm``
    on CUDA, :class:`PooledBatchNorm2d` on CPU (also with one rank, so 1 and W ranks compute alike)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            pooled = PooledBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats).to(child.weight.device)
            pooled.load_state_dict(child.state_dict())
            setattr(module, name, pooled)
        else:
            convert_batchnorm(child, device)
    return module
