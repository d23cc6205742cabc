"""Data a user already holds, as kdforge's `TensorData`: arrays, dicts, torch datasets and data loaders.

Everything kdforge trains on is a `TensorData` (named tensors, one row per sample), so the loop can index whole
batches at once. `as_tensor_data` is the one door into it, for the Python API and for `py:` data sources alike.

Positional forms are (features, class ids), scikit-learn's (X, y): `x` becomes float32 and `labels` int64, as
every built-in source gives them. Named forms (dicts) keep their keys and dtypes, except float64, which becomes
float32 (numpy's default float, never what a torch model holds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from kdforge.data.bundle import DataBundle
from kdforge.errors import KDForgeError
from kdforge.types import DataInfo, TensorData

ACCEPTED = ("a TensorData, a dict of arrays or tensors, an (X, y) pair, a TensorDataset, a map-style Dataset of "
            "(x, y) tuples or dicts, or a DataLoader")
SPLITS = ("train", "val", "test")


def as_tensor_data(obj: Any, name: str) -> TensorData:
    """`obj` as a TensorData named `name`; anything else is a one-line KDForgeError naming `name`."""
    if isinstance(obj, TensorData):
        return obj
    if isinstance(obj, Mapping):
        return _named(obj, name)
    if isinstance(obj, TensorDataset):
        return _positional(list(obj.tensors), name)
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return _positional(list(obj), name)
    if isinstance(obj, DataLoader):
        return _batches(list(obj), name)
    if _is_map_style(obj):
        return _items([obj[i] for i in range(len(obj))], name)
    raise KDForgeError(f"{name}: cannot use {type(obj).__name__} as data; give {ACCEPTED}.")


def bundle_from_splits(splits: Mapping[str, Any], where: str) -> DataBundle:
    """A DataBundle from {'train', 'test'[, 'val']} splits in any form `as_tensor_data` takes. Teacher, student
    and scratch baseline all train on `train`; `num_classes` is one more than the largest label of any split."""
    keys = set(splits)
    if keys - set(SPLITS) or not {"train", "test"} <= keys:
        raise KDForgeError(f"{where}: got splits {sorted(keys)}; give 'train' and 'test', and optionally 'val'.")
    data = {key: _renamed(as_tensor_data(value, f"{where}[{key!r}]"), key) for key, value in splits.items()}
    train = data["train"]
    labels = [part.tensors["labels"].flatten() for part in data.values() if "labels" in part.tensors]
    num_classes = int(torch.cat(labels).max()) + 1 if labels else 0
    shape = tuple(int(d) for d in train.tensors["x"].shape[1:]) if "x" in train.tensors else ()
    return DataBundle(DataInfo(shape, num_classes), train, train, train, data.get("val"), data["test"])


def _renamed(data: TensorData, name: str) -> TensorData:
    return data if data.name == name else TensorData(data.tensors, name=name)


def _is_map_style(obj: Any) -> bool:
    """A map-style dataset (torch's protocol: `__len__` and integer `__getitem__`), not an array or a string."""
    plain = (str, bytes, np.ndarray, Tensor, Mapping, type)
    return hasattr(obj, "__len__") and hasattr(obj, "__getitem__") and not isinstance(obj, plain)


def _tensor(value: Any, name: str, key: str) -> Tensor:
    try:
        tensor = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise KDForgeError(f"{name}: {key!r} is not numeric ({_first_line(exc)}); give arrays, tensors or "
                           "numbers.") from None
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def _named(tensors: Mapping[str, Any], name: str) -> TensorData:
    return TensorData({str(key): _tensor(value, name, str(key)) for key, value in tensors.items()}, name=name)


def _positional(values: Sequence[Any], name: str) -> TensorData:
    """(x,) or (x, labels) as features (float32) and class ids (int64)."""
    if not 1 <= len(values) <= 2:
        raise KDForgeError(f"{name}: got {len(values)} tensors per sample; give (x,) or (x, y), or a dict to name "
                           "more inputs.")
    tensors = {"x": _tensor(values[0], name, "x").float()}
    if len(values) == 2:
        labels = _tensor(values[1], name, "labels")
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise KDForgeError(f"{name}: labels must be integer class ids; got fractional {labels.dtype} values.")
        tensors["labels"] = labels.long()
    return TensorData(tensors, name=name)


def _stack(rows: Sequence[Any], name: str, key: str) -> Tensor:
    try:
        return torch.stack([_tensor(row, name, key) for row in rows])
    except RuntimeError as exc:
        raise KDForgeError(f"{name}: the samples' {key!r} differ in shape ({_first_line(exc)}); pad them to one "
                           "shape.") from None


def _items(items: list[Any], name: str) -> TensorData:
    """Samples of a map-style dataset: all (x, y) tuples or all dicts with the same keys."""
    if not items:
        raise KDForgeError(f"{name}: the dataset is empty. Check the data source.")
    if all(isinstance(item, Mapping) for item in items):
        keys = list(items[0])
        if any(set(item) != set(keys) for item in items):
            raise KDForgeError(f"{name}: the dataset's dict samples have different keys; give every sample {keys}.")
        return _named({key: _stack([item[key] for item in items], name, key) for key in keys}, name)
    if all(isinstance(item, (tuple, list)) for item in items):
        width = len(items[0])
        if any(len(item) != width for item in items):
            raise KDForgeError(f"{name}: the dataset's tuple samples have different lengths; give (x, y) each.")
        return _positional([_stack([item[k] for item in items], name, f"item[{k}]") for k in range(width)], name)
    kinds = sorted({type(item).__name__ for item in items})
    raise KDForgeError(f"{name}: samples are {', '.join(kinds)}; a Dataset's samples must be (x, y) tuples or dicts.")


def _batches(batches: list[Any], name: str) -> TensorData:
    """One pass over a DataLoader: its tuple or dict batches concatenated along the first dimension."""
    if not batches:
        raise KDForgeError(f"{name}: the DataLoader yields no batches. Check its dataset and drop_last.")
    try:
        if all(isinstance(batch, Mapping) for batch in batches):
            keys = list(batches[0])
            return _named({key: torch.cat([_tensor(b[key], name, key) for b in batches]) for key in keys}, name)
        if all(isinstance(batch, (tuple, list)) for batch in batches):
            width = len(batches[0])
            return _positional([torch.cat([_tensor(b[k], name, f"batch[{k}]") for b in batches])
                                for k in range(width)], name)
    except (KeyError, IndexError, RuntimeError) as exc:
        raise KDForgeError(f"{name}: the DataLoader's batches do not line up ({_first_line(exc)}); give every "
                           "batch the same keys and shapes.") from None
    kinds = sorted({type(batch).__name__ for batch in batches})
    raise KDForgeError(f"{name}: batches are {', '.join(kinds)}; a DataLoader's batches must be tuples or dicts.")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = ["ACCEPTED", "as_tensor_data", "bundle_from_splits"]
