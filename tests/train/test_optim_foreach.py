"""The loop's optimizers use torch's multi-tensor (foreach) kernels, with the per-parameter loop's exact results."""

import pytest
import torch

from kdforge.train.config import LoopConfig
from kdforge.train.optim import make_optimizer


def train(cfg: LoopConfig, foreach: bool | None) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = make_optimizer(cfg, model.parameters())
    if foreach is not None:
        for group in optimizer.param_groups:
            group["foreach"] = foreach
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(25):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_foreach_optimizer_equals_the_per_parameter_loop_bit_for_bit(name):
    cfg = LoopConfig(optimizer=name, lr=0.01, weight_decay=0.01)
    assert all(g["foreach"] for g in make_optimizer(cfg, [torch.nn.Parameter(torch.ones(2))]).param_groups)
    for a, b in zip(train(cfg, None), train(cfg, False), strict=True):
        assert torch.equal(a, b)
