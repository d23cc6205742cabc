"""Optimizers and learning-rate schedules: a plain mapping from their names, no registry."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from kdforge.train.config import LoopConfig


def make_optimizer(cfg: LoopConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The multi-tensor (`foreach`) implementation: one kernel per operation over all parameters instead of a
    Python loop over them (torch picks it on CUDA, not on CPU). Its results equal the per-parameter loop's bit
    for bit (tests/train/test_optim_foreach.py); `fused` is not used, as it rounds differently."""
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)


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
