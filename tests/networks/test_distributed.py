"""PooledBatchNorm2d (its one-rank fused path and its pooled-sums path) equals nn.BatchNorm2d (output, gradients,
running statistics, state dict)."""

import torch
from torch import nn

from diffface.networks import create_model
import pytest

from diffface.networks.distributed import PooledBatchNorm2d, convert_batchnorm, pooled_batch_norm


class _PooledSums(PooledBatchNorm2d):
    """The several-ranks path (sums pooled over ranks), run on one rank: the all-reduce is the identity."""

    def forward(self, x):
        return pooled_batch_norm(x, self) if self.training else super().forward(x)


@pytest.mark.parametrize("module", [PooledBatchNorm2d, _PooledSums])
def test_pooled_batchnorm_matches_torch_in_float64(module):
    torch.manual_seed(0)
    reference, pooled = nn.BatchNorm2d(4).double(), module(4).double()
    with torch.no_grad():
        reference.weight.uniform_()
        reference.bias.uniform_()
    pooled.load_state_dict(reference.state_dict())
    x = torch.randn(5, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 4, 6, 6, dtype=torch.float64)
    a, b = reference(x), pooled(x)
    grads_a = torch.autograd.grad((a * upstream).sum(), [x, reference.weight, reference.bias])
    grads_b = torch.autograd.grad((b * upstream).sum(), [x, pooled.weight, pooled.bias])
    torch.testing.assert_close(b, a)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(gb, ga)
    torch.testing.assert_close(pooled.running_mean, reference.running_mean)
    torch.testing.assert_close(pooled.running_var, reference.running_var)
    assert int(pooled.num_batches_tracked) == int(reference.num_batches_tracked) == 1
    reference.eval(), pooled.eval()
    torch.testing.assert_close(pooled(x), reference(x))
    assert torch.autograd.gradcheck(lambda t: pooled.train()(t), [x[:2, :, :3, :3].detach().requires_grad_(True)])


def test_conversion_keeps_the_state_dict():
    net = create_model("mobileface", width=4)
    keys = set(net.state_dict())
    converted = convert_batchnorm(net, torch.device("cpu"))
    assert sum(isinstance(m, PooledBatchNorm2d) for m in converted.modules()) == 27
    assert set(converted.state_dict()) == keys
