"""Data for a run: load a source, split it, and derive what each model trains on.

The teacher (when trained first) sees every labelled training sample. The student may be limited to
`student_labels` labelled samples; the remaining training inputs then join it as an unlabelled transfer
set (labels = -100), which only teacher-driven losses use (Bucila et al. 2006; Hinton et al. 2015).
The scratch baseline sees only the student's labelled samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from kdforge.data import sources  # noqa: F401  (registers the built-in sources)
from kdforge.data.sources import ArrayData
from kdforge.data.tensors import Batch, TensorData, iterate_batches, sequential_batches
from kdforge.errors import KDForgeError, RecipeError
from kdforge.imports import is_py_ref, resolve_py_ref
from kdforge.losses.base import IGNORE_INDEX
from kdforge.models import DataInfo
from kdforge.recipe import DataSpec
from kdforge.registry import DATASETS


@dataclass
class DataBundle:
    info: DataInfo
    teacher_train: TensorData
    student_train: TensorData
    scratch_train: TensorData
    val: TensorData | None
    test: TensorData
    tokenizer: Any = None  # text sources: the TextTokenizer that made the ids (saved with the run)


def _as_arrays(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(obj, ArrayData):
        return obj.x, obj.y
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return np.asarray(obj[0]), np.asarray(obj[1])
    raise RecipeError(f"{where}: expected (X, y) arrays; got {type(obj).__name__}.")


def _stratify(y: np.ndarray) -> np.ndarray | None:
    _, counts = np.unique(y, return_counts=True)
    return y if counts.min() >= 2 else None


def _split(x: np.ndarray, y: np.ndarray, size: float | int, seed: int) -> tuple[np.ndarray, ...]:
    return train_test_split(x, y, test_size=size, random_state=seed, stratify=_stratify(y))


def _load_raw(spec: DataSpec, base_dir: str | Path | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], bool]:
    """{'all': (X, y)} or {'train':..., 'test':..., ['val':...]}, and the source's standardize default."""
    where = "recipe.data.source"
    if is_py_ref(spec.source):
        factory = resolve_py_ref(spec.source, where=where, search_dir=base_dir)
        try:
            out = factory(**spec.args)
        except TypeError as exc:
            raise RecipeError(f"recipe.data.args: {spec.source} does not accept these arguments ({exc}).") from exc
        if isinstance(out, dict):
            unknown = set(out) - {"train", "val", "test"}
            if unknown or not {"train", "test"} <= set(out):
                raise RecipeError(f"{where}: {spec.source} returned keys {sorted(out)}; expected train, test, val.")
            return {k: _as_arrays(v, f"{where}[{k}]") for k, v in out.items()}, False
        return {"all": _as_arrays(out, where)}, False
    loader = DATASETS.get(spec.source, where=where)
    if spec.args:
        raise RecipeError(f"recipe.data.args: built-in source {spec.source} takes no arguments; remove them.")
    raw = loader()
    return {"all": (raw.x, raw.y)}, raw.standardize


def _check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise KDForgeError(f"{where}: {len(x)} inputs but {len(y)} labels; give one label per input.")
    if len(x) == 0:
        raise KDForgeError(f"{where}: the dataset is empty.")
    if not np.issubdtype(y.dtype, np.integer):
        raise KDForgeError(f"{where}: labels must be integer class ids; got dtype {y.dtype}.")
    if y.min() < 0:
        raise KDForgeError(f"{where}: labels must be >= 0; found {int(y.min())}.")


def load_data(spec: DataSpec, base_dir: str | Path | None = None) -> DataBundle:
    """Load, split and standardise the data a recipe names."""
    if spec.source.startswith("text:"):  # token sequences for language models (kdforge.llm.data)
        from kdforge.llm.data import text_source

        return text_source(spec, base_dir)  # the recipe's folder: a local hf: or py: tokenizer resolves there
    parts, standardize_default = _load_raw(spec, base_dir)
    for key, (x, y) in parts.items():
        _check_arrays(x, y, f"recipe.data ({key})")
    if "all" in parts:
        x, y = parts["all"]
        x_rest, x_test, y_rest, y_test = _split(x, y, spec.test_size, spec.split_seed)
        parts = {"train": (x_rest, y_rest), "test": (x_test, y_test)}
        if spec.val_size > 0:
            val_fraction = spec.val_size / (1 - spec.test_size)
            x_tr, x_val, y_tr, y_val = _split(x_rest, y_rest, val_fraction, spec.split_seed)
            parts = {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}
    x_train, y_train = parts["train"]
    num_classes = int(max(int(y.max()) for _, y in parts.values()) + 1)
    standardize = standardize_default if spec.standardize is None else spec.standardize
    mean = x_train.mean(axis=0, keepdims=True) if standardize else 0.0
    std = x_train.std(axis=0, keepdims=True) + 1e-8 if standardize else 1.0

    def tensors(key: str) -> TensorData:
        x, y = parts[key]
        x = ((x - mean) / std).astype(np.float32)
        return TensorData({"x": torch.from_numpy(x), "labels": torch.from_numpy(y.astype(np.int64))}, name=key)

    train = tensors("train")
    student_train, scratch_train = student_and_scratch_train(train, spec)
    return DataBundle(
        info=DataInfo(tuple(int(d) for d in parts["train"][0].shape[1:]), num_classes),
        teacher_train=train,
        student_train=student_train,
        scratch_train=scratch_train,
        val=tensors("val") if "val" in parts else None,
        test=tensors("test"),
    )


def student_and_scratch_train(train: TensorData, spec: DataSpec) -> tuple[TensorData, TensorData]:
    """(student's, scratch baseline's) training sets from the teacher's `train` (with per-row `labels`).

    One place for every labelled source (arrays here, text:stdlib_topics), so `student_labels` and `transfer_set`
    mean the same everywhere: the student keeps `student_labels` labelled rows and, with `transfer_set`, every
    other row with labels -100 (teacher-driven losses only); the scratch baseline gets the labelled rows alone.
    """
    labelled = _labelled_rows(train.tensors["labels"].numpy(), spec)
    scratch_train = train.subset(labelled, name="train (labelled)")
    if spec.student_labels is None or not spec.transfer_set:
        return train.subset(labelled, name="train (student)"), scratch_train
    student_labels = torch.full((len(train),), IGNORE_INDEX, dtype=torch.long)
    student_labels[labelled] = train.tensors["labels"][labelled]
    return train.with_tensor("labels", student_labels), scratch_train


def _labelled_rows(y_train: np.ndarray, spec: DataSpec) -> torch.Tensor:
    """Rows of the training split whose labels the student may use (a stratified subset, fixed by split_seed)."""
    n = len(y_train)
    if spec.student_labels is None or spec.student_labels >= n:
        return torch.arange(n)
    num_classes = len(np.unique(y_train))
    if spec.student_labels < num_classes:
        raise RecipeError(
            f"recipe.data.student_labels: {spec.student_labels} labelled samples cannot cover {num_classes} classes; "
            f"use at least {num_classes}."
        )
    rows, _ = train_test_split(np.arange(n), train_size=spec.student_labels, random_state=spec.split_seed,
                               stratify=_stratify(y_train))
    return torch.from_numpy(np.sort(rows))


__all__ = ["Batch", "DataBundle", "TensorData", "iterate_batches", "load_data", "sequential_batches",
           "student_and_scratch_train"]
