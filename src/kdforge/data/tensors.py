"""In-memory datasets as dicts of equal-length tensors, and the batch order the training loop reads.

Batches are dicts (`{"x": ..., "labels": ..., "index": ...}`), so image, tabular and token data go through
the same loop. Indexing a whole batch at once costs one gather per key, not one Python call per sample,
which matters when the student is small enough that per-step Python work dominates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from kdforge.errors import KDForgeError

Batch = dict[str, Tensor]


class TensorData:
    """A dataset held as named tensors sharing their first dimension; `index` holds stable sample ids."""

    def __init__(self, tensors: Mapping[str, Tensor], name: str = "data") -> None:
        if not tensors:
            raise KDForgeError(f"{name}: a dataset needs at least one tensor.")
        lengths = {key: len(value) for key, value in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise KDForgeError(f"{name}: tensors have different lengths {lengths}; give every key one row per sample.")
        self.tensors = dict(tensors)
        self.name = name
        if len(self) == 0:
            raise KDForgeError(f"{name}: the dataset is empty. Check the data source and the split sizes.")
        if "index" not in self.tensors:
            self.tensors["index"] = torch.arange(len(self))

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, rows: Tensor | slice) -> Batch:
        return {key: value[rows] for key, value in self.tensors.items()}

    def subset(self, rows: Tensor, name: str | None = None) -> TensorData:
        return TensorData(self[rows], name=name or self.name)

    def with_tensor(self, key: str, value: Tensor) -> TensorData:
        return TensorData({**self.tensors, key: value}, name=self.name)


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
