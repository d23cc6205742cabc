"""Optimizers and learning-rate schedules: a plain mapping from their names, no registry."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from kdforge.train.config import LoopConfig


def make_optimizer(cfg: LoopConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """torch's fused kernel where torch has one for these parameters (CPU and CUDA since torch 2.4; Adam and
    AdamW on FSDP2's sharded DTensors too, SGD not): one kernel for the whole update, 2-3x faster than the
    per-parameter loop torch picks on CPU, within float rounding of it (tests/train/test_optim_foreach.py).
    Elsewhere the multi-tensor (`foreach`) implementation, whose results equal that loop's bit for bit."""
    params = list(params)
    if cfg.optimizer == "sgd" and _sharded(params):  # torch has no sharding rule for the fused SGD kernel
        return _optimizer(cfg, params, {"foreach": True})
    try:
        return _optimizer(cfg, params, {"fused": True})
    except RuntimeError:  # no fused kernel for these parameters (an older torch on CPU, another device or dtype)
        return _optimizer(cfg, params, {"foreach": True})


def _sharded(params: list[nn.Parameter]) -> bool:
    """Some parameter is a DTensor (FSDP2's shards)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in params)


def _optimizer(cfg: LoopConfig, params: list[nn.Parameter], kernel: dict[str, bool]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kernel)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernel)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **kernel)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate before optimizer step `step` (0-based): linear warm-up, then
    constant, cosine to 0, or linear to 0 over the remaining steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def make_scheduler(cfg: LoopConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup_steps, cfg.scheduler)
    )
