"""In-memory datasets as dicts of equal-length tensors, and the batch order the training loop reads.

Batches are dicts (`{"x": ..., "labels": ..., "index": ...}`), so image, tabular and token data go through
the same loop. Indexing a whole batch at once costs one gather per key, not one Python call per sample,
which matters when the student is small enough that per-step Python work dominates.

Token rows of different lengths are stored padded to one width, and `PaddedRows` says so: the training stream
cuts each batch after its longest row (per-batch padding), so a batch of short conversations does not pay for
`seq_len` columns. The loop does not know: it reads batches as always.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor

from kdforge.types import Batch, TensorData

__all__ = ["ROW_KEYS", "Batch", "PaddedRows", "TensorData", "epoch_order", "iterate_batches", "num_batches",
           "sequential_batches", "trim_padding"]


ROW_KEYS = ("input_ids", "attention_mask", "labels", "mask")  # the per-token tensors of kdforge.lm.rows


def trim_padding(batch: Batch, key: str = "attention_mask", keys: tuple[str, ...] = ROW_KEYS) -> Batch:
    """`batch` with `keys` cut after the last column any row uses (`key` is 1 on real tokens, 0 on right padding).

    Only the named per-token tensors are cut (another tokenization's columns, say, stay whole). With right
    padding and causal attention the real tokens' outputs do not depend on the columns removed, and those
    columns carry no labels, so the losses are unchanged.
    """
    real = batch[key]
    used = int(real.any(0).nonzero().max()) + 1 if bool(real.any()) else 1
    if used == real.shape[1]:
        return batch
    return {k: v[:, :used] if k in keys else v for k, v in batch.items()}


class PaddedRows(TensorData):
    """Token rows stored right-padded to one width, which training batches trim to their longest row
    (`trim_padding`). Evaluation reads whole rows (`sequential_batches`), so predictions keep one width."""

    def __init__(self, tensors: Mapping[str, Tensor], name: str = "data", key: str = "attention_mask",
                 keys: tuple[str, ...] = ROW_KEYS) -> None:
        super().__init__(tensors, name=name)
        self.key, self.keys = key, tuple(keys)

    def collate(self, batch: Batch) -> Batch:
        return trim_padding(batch, self.key, self.keys)

    def subset(self, rows: Tensor, name: str | None = None) -> PaddedRows:
        return PaddedRows(self[rows], name=name or self.name, key=self.key, keys=self.keys)

    def with_tensor(self, key: str, value: Tensor) -> PaddedRows:
        return PaddedRows({**self.tensors, key: value}, name=self.name, key=self.key, keys=self.keys)


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
    `PaddedRows` batches are cut after their longest row.
    """
    per_epoch = num_batches(len(data), batch_size)
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        order = epoch_order(len(data), seed, epoch) if shuffle else torch.arange(len(data))
        for b in range(skip, per_epoch):
            rows = order[b * batch_size:(b + 1) * batch_size]
            if num_processes > 1:
                rows = rows.tensor_split(num_processes)[process_index]
            yield data.collate(data[rows]) if isinstance(data, PaddedRows) else data[rows]
        epoch, skip = epoch + 1, 0


def sequential_batches(data: TensorData, batch_size: int) -> Iterator[Batch]:
    """One ordered pass (evaluation)."""
    for start in range(0, len(data), batch_size):
        yield data[slice(start, start + batch_size)]
