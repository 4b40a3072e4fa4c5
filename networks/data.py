"""Training data for the regressor: a deterministic step-indexed data order, sharded over ranks.

The global batch of step ``s`` is the slice ``[s·B, (s+1)·B)`` of an endless stream that concatenates
one random permutation of the training items per epoch, each drawn from ``(seed, epoch)``. So the data a
step sees depends on nothing but the step: a run resumed at step ``s`` sees exactly the batches an
uninterrupted run would, and ``W`` ranks taking the ``W`` consecutive shards of each global batch see
the same samples as one process. Augmentation is drawn per sample from ``(seed, stream position)``
for the same reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffface.data.format import CURATION_NAME, FaceDataset, item_paths, select_items
from diffface.params import ParamNormalizer

EPOCH_SEED_STRIDE = 1_000_003  # seeds of epoch permutations: seed · stride + epoch (distinct for epoch < stride)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The item order of one epoch. Shape: -> (num_items,) int64."""
    generator = torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)
    return torch.randperm(num_items, generator=generator)


def global_batch(step: int, num_items: int, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Item indices and stream positions of the global batch of ``step``.

    Shape:
        -> indices (batch_size,), positions (batch_size,) int64.

    Example:
        >>> global_batch(0, num_items=10, batch_size=4, seed=0)[0]   # first 4 of epoch 0's permutation
    """
    if num_items < 1:
        raise ValueError("the training split is empty")
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = positions // num_items, positions % num_items
    indices = torch.empty_like(positions)
    for epoch in epochs.unique().tolist():
        chosen = epochs == epoch
        indices[chosen] = epoch_permutation(num_items, seed, epoch)[offsets[chosen]]
    return indices, positions


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for steps ``start_step .. end_step - 1``, this rank's shard of the global batch as
    ``[(item index, stream position), ...]`` (see the module docstring).

    Args:
        num_items: training items.
        batch_size: the global batch (divisible by ``world_size``).
        seed: data-order seed.
        start_step, end_step: the steps to serve.
        rank, world_size: this process's shard.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int, end_step: int,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.shard = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            indices, positions = global_batch(step, self.num_items, self.batch_size, self.seed)
            yield list(zip(indices[self.shard].tolist(), positions[self.shard].tolist()))


class AugmentedItems(torch.utils.data.Dataset):
    """A :class:`FaceDataset` indexed by ``(item index, stream position)``, augmenting each crop with a
    generator seeded from ``(seed, position)`` (photometric only: targets are unchanged).

    Args:
        dataset: the training split.
        augmenter: an ``nn.Module`` ``(images (B, 3, H, W), generator) -> images``, or None.
        seed: augmentation seed.
    """

    def __init__(self, dataset: FaceDataset, augmenter: torch.nn.Module | None, seed: int):
        self.dataset, self.augmenter, self.seed = dataset, augmenter, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, position = key
        item = self.dataset[index]
        if self.augmenter is not None:
            generator = torch.Generator().manual_seed(self.seed * EPOCH_SEED_STRIDE + position + 1)
            with torch.no_grad():
                item["image"] = self.augmenter(item["image"][None], generator)[0]
        return item


def parameter_statistics(root: str | Path, split: str = "train", honour_curation: bool = True) -> ParamNormalizer:
    """Per-parameter mean and std of a dataset split (read from the items' ``.npz``, images untouched)."""
    entries = select_items(root, split, honour_curation)
    if len(entries) < 2:
        rejected = len(select_items(root, split, honour_curation=False)) - len(entries)
        if rejected:
            raise ValueError(f"{root}: curation rejected {rejected} of the {rejected + len(entries)} items of the "
                             f"{split!r} split, leaving {len(entries)}; normalisation needs at least 2: change the "
                             f"decisions with `diffface curate {root}` (or move {Path(root) / CURATION_NAME} away "
                             f"to undo them all)")
        raise ValueError(f"{root}: the {split!r} split has {len(entries)} items; normalisation needs at least 2")
    params = []
    for entry in entries:
        with np.load(item_paths(root, entry.name)[1], allow_pickle=False) as data:
            params.append(data["params"])
    return ParamNormalizer.from_samples(torch.from_numpy(np.stack(params)).double()).float()
