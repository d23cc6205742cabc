"""What a model costs to keep and to run: parameters, size of its exported weights, latency and throughput."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (buffers such as batch-norm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def weights_size_bytes(model: nn.Module) -> int:
    """Size in bytes of the model's state dict serialised as safetensors: what `kdforge export` writes
    (and what `model.safetensors` in a run folder holds), header included."""
    state = {k: v.detach().contiguous().clone().cpu() for k, v in model.state_dict().items()}
    return len(safetensors_bytes(state))


def latency_stats(seconds: Sequence[float], batch_size: int) -> dict[str, Any]:
    """p50 and p95 latency (milliseconds, linear interpolation between order statistics) of timed calls on
    batches of `batch_size` rows, and the throughput at the median (rows per second)."""
    if len(seconds) == 0:
        raise ValueError("latency_stats needs at least one timing.")
    if batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter of latency_stats must be >= 1. Got {batch_size!r} instead.")
    times = np.asarray(seconds, dtype=np.float64)
    p50, p95 = np.percentile(times, [50, 95])
    return {"batch_size": batch_size, "repeats": len(times), "p50_ms": 1000 * float(p50), "p95_ms": 1000 * float(p95),
            "throughput": batch_size / float(p50) if p50 > 0 else float("inf")}


@torch.no_grad()
def measure_latency(call: Callable[[], Any], batch_size: int, repeats: int = 30, warmup: int = 3,
                    timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time `call()` (one forward pass on a batch of `batch_size` rows) `repeats` times after `warmup` calls.

    Args:
        call: Runs the model once; its result is discarded.
        batch_size: Rows in the batch `call` runs on (for throughput).
        repeats: Timed calls.
        warmup: Untimed calls first (allocator, caches).
        timer: Clock in seconds (tests pass a fake one).
    """
    if repeats < 1:
        raise ValueError(f"The 'repeats' parameter of measure_latency must be >= 1. Got {repeats!r} instead.")
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = timer()
        call()
        seconds.append(timer() - start)
    return latency_stats(seconds, batch_size)


@torch.no_grad()
def measure_latencies(calls: dict[str, Callable[[], Any]], batch_size: int, repeats: int = 30, warmup: int = 3,
                      timer: Callable[[], float] = time.perf_counter) -> dict[str, dict[str, Any]]:
    """Time several models on the same batch size, interleaved (a, b, a, b, ...), so that a burst of load from
    other processes slows all of them alike and their ratio (the speed-up) stays fair.

    Returns:
        `latency_stats` per name.
    """
    if repeats < 1:
        raise ValueError(f"The 'repeats' parameter of measure_latencies must be >= 1. Got {repeats!r} instead.")
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = timer()
            call()
            seconds[name].append(timer() - start)
    return {name: latency_stats(values, batch_size) for name, values in seconds.items()}
