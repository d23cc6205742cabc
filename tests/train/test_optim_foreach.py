"""The loop's optimizers: torch's fused kernels where torch has them (within float rounding of the
per-parameter loop), else the multi-tensor (foreach) kernels (equal to it bit for bit)."""

import pytest
import torch

from kdforge.train import optim
from kdforge.train.config import LoopConfig
from kdforge.train.optim import make_optimizer

NAMES = ["adam", "adamw", "sgd"]


def train(cfg: LoopConfig, kernel: dict[str, bool] | None) -> list[torch.Tensor]:
    """25 steps on a fixed problem; `kernel` overrides the implementation the optimizer was built with."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimizer = make_optimizer(cfg, model.parameters())
    for group in optimizer.param_groups:
        group.update(kernel or {})
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(25):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _cfg(name: str) -> LoopConfig:
    return LoopConfig(optimizer=name, lr=0.01, weight_decay=0.01)


@pytest.mark.parametrize("name", NAMES)
def test_the_fused_kernel_is_used_on_cpu_and_matches_the_per_parameter_loop(name):
    cfg = _cfg(name)
    assert all(g["fused"] for g in make_optimizer(cfg, [torch.nn.Parameter(torch.ones(2))]).param_groups)
    per_parameter = train(cfg, {"fused": False, "foreach": False})
    for a, b in zip(train(cfg, None), per_parameter, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_without_a_fused_kernel_the_foreach_kernel_equals_the_loop_bit_for_bit(name, monkeypatch):
    built = optim._optimizer

    def no_fused(cfg, params, kernel):  # what an older torch says on CPU
        if kernel.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                               "devices: ['cuda']")
        return built(cfg, params, kernel)

    monkeypatch.setattr(optim, "_optimizer", no_fused)
    cfg = _cfg(name)
    groups = make_optimizer(cfg, [torch.nn.Parameter(torch.ones(2))]).param_groups
    assert all(g["foreach"] and not g.get("fused") for g in groups)
    for a, b in zip(train(cfg, None), train(cfg, {"foreach": False}), strict=True):
        assert torch.equal(a, b)


_SHARDED_STEP = """
import os, sys, torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from kdforge.train.config import LoopConfig
from kdforge.train.optim import make_optimizer
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
for name in ("adam", "adamw", "sgd"):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    fully_shard(model)
    optimizer = make_optimizer(LoopConfig(optimizer=name, lr=0.1, momentum=0.9), model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    print(name, "fused" if optimizer.param_groups[0].get("fused") else "foreach")
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_every_optimizer_steps_on_fsdp2_shards(tmp_path):
    """torch shards the fused Adam/AdamW kernels but not fused SGD's, which fails only at the first step."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-c", _SHARDED_STEP, str(port)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["adam", "fused", "adamw", "fused", "sgd", "foreach"]
