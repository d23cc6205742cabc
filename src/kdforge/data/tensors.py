"""In-memory datasets as dicts of equal-length tensors, and the batch order the training loop reads.

Batches are dicts (`{"x": ..., "labels": ..., "index": ...}`), so image, tabular and token data go through
the same loop. Indexing a whole batch at once costs one gather per key, not one Python call per sample,
which matters when the student is small enough that per-step Python work dominates.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from kdforge.types import Batch, TensorData

__all__ = ["Batch", "TensorData", "epoch_order", "iterate_batches", "num_batches", "sequential_batches"]


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The sample order of one epoch: a permutation that depends only on (seed, epoch).

    Deriving it from the seed, not from a generator's running state, is what makes resume exact: a run
    restarted at step s recomputes the same order and skips the batches it has already seen.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def iterate_batches(data: TensorData, batch_size: int, seed: int, start_step: int = 0, shuffle: bool = True,
                    process_index: int = 0, num_processes: int = 1) -> Iterator[Batch]:
    """Endless stream of batches from `start_step` on; with several processes each takes its share of a
    global batch of `batch_size` (so the global batch, and the loss curve, do not depend on the world size).
    """
    per_epoch = num_batches(len(data), batch_size)
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        order = epoch_order(len(data), seed, epoch) if shuffle else torch.arange(len(data))
        for b in range(skip, per_epoch):
            rows = order[b * batch_size:(b + 1) * batch_size]
            if num_processes > 1:
                rows = rows.tensor_split(num_processes)[process_index]
            yield data[rows]
        epoch, skip = epoch + 1, 0


def sequential_batches(data: TensorData, batch_size: int) -> Iterator[Batch]:
    """One ordered pass (evaluation)."""
    for start in range(0, len(data), batch_size):
        yield data[slice(start, start + batch_size)]
