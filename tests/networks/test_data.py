"""The step-indexed data order: epochs are permutations, shards tile the global batch, resuming is exact."""

import torch

from diffface.networks.data import AugmentedItems, StepBatchSampler, global_batch, parameter_statistics
from diffface.data.format import FaceDataset


def test_each_epoch_visits_every_item_once():
    stream = torch.cat([global_batch(step, 10, 4, seed=3)[0] for step in range(5)])  # 20 = two epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])  # a new order each epoch
    assert not torch.equal(global_batch(0, 10, 4, seed=3)[0], global_batch(0, 10, 4, seed=4)[0])


def test_shards_tile_the_global_batch_and_resume_continues_the_stream():
    full = list(StepBatchSampler(7, 6, seed=1, start_step=0, end_step=4))
    shards = [list(StepBatchSampler(7, 6, seed=1, start_step=0, end_step=4, rank=r, world_size=3)) for r in range(3)]
    for step in range(4):
        assert sum((s[step] for s in shards), []) == full[step]
    assert list(StepBatchSampler(7, 6, seed=1, start_step=2, end_step=4)) == full[2:]


def test_augmentation_depends_on_the_stream_position_only(tiny_dataset):
    from diffface.data.augment import AugmentConfig, Augmenter

    items = AugmentedItems(FaceDataset(tiny_dataset.root), Augmenter(AugmentConfig(rgb_noise_probability=1.0)), 0)
    a, b, c = items[(2, 5)]["image"], items[(2, 5)]["image"], items[(2, 6)]["image"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, FaceDataset(tiny_dataset.root)[2]["image"])


def test_parameter_statistics_from_the_training_split(tiny_dataset):
    train = FaceDataset(tiny_dataset.root, "train")
    params = torch.stack([train[i]["params"] for i in range(len(train))]).double()
    stats = parameter_statistics(tiny_dataset.root, "train")
    torch.testing.assert_close(stats.mean, params.mean(0).float())
    torch.testing.assert_close(stats.std, params.std(0).float())
