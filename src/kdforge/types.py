"""The few types every layer shares: a batch, the ignore label, in-memory datasets, what models need of data.

It imports torch (and kdforge.errors) only, so a loss, the loop, the cache and the application can all name
these without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from kdforge.errors import KDForgeError

IGNORE_INDEX = -100  # label of an unlabelled sample or a masked token, as in torch's cross_entropy

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


@dataclass(frozen=True)
class DataInfo:
    """What built-in architectures need to know about the data to size themselves."""

    input_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...] | None = None  # one per class id, for reports (None: the ids are the names)
