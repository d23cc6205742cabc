"""What a run trains and tests on (`DataBundle`), what a caller asks for (`DataRequest`), and the splits.

The teacher (when trained first) sees every labelled training sample. The student may be limited to
`student_labels` labelled samples; the remaining training inputs then join it as an unlabelled transfer
set (labels = -100), which only teacher-driven losses use (Bucila et al. 2006; Hinton et al. 2015).
The scratch baseline sees only the student's labelled samples.

scikit-learn (stratified splits) is imported by the functions that split, not with the module: resolving
`kdforge.distill` on in-memory data must not pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from kdforge.errors import RecipeError
from kdforge.types import IGNORE_INDEX, DataInfo, TensorData


class DataRequest(Protocol):
    """The data a caller asks for. A protocol, so the data layer needs no schema: the recipe's `DataSpec`
    (or any object with these attributes) fits it as it is."""

    source: str
    args: dict[str, Any]
    test_size: float
    val_size: float
    split_seed: int
    standardize: bool | None
    student_labels: int | None
    transfer_set: bool


@dataclass
class DataBundle:
    """One run's data: what the teacher, the student and the scratch baseline train on, and val and test."""

    info: DataInfo
    teacher_train: TensorData
    student_train: TensorData
    scratch_train: TensorData
    val: TensorData | None
    test: TensorData
    tokenizer: Any = None  # text sources: the TextTokenizer that made the ids (saved with the run)
    # what was done to the raw inputs, for a shipped model to do the same: {"standardize": {"input": "x", "mean":
    # [...], "std": [...]}} (statistics of the training split; kdforge.models.preprocess); saved with the run
    preprocess: dict[str, Any] = field(default_factory=dict)


def stratify(y: np.ndarray) -> np.ndarray | None:
    """`y` when every class has two samples (so a stratified split exists), else None."""
    _, counts = np.unique(y, return_counts=True)
    return y if counts.min() >= 2 else None


def stratified_split(x: np.ndarray, y: np.ndarray, size: float | int, seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split  # here: scikit-learn costs a second to import

    return train_test_split(x, y, test_size=size, random_state=seed, stratify=stratify(y))


def permutation_split(n: int, test_size: float, val_size: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(train, val, test) row ids from a seeded permutation, each sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test, n_val = int(round(n * test_size)), int(round(n * val_size))
    parts = order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]
    return tuple(part.sort().values for part in parts)  # type: ignore[return-value]


def shared_rows_bundle(info: DataInfo, data: TensorData, train: Tensor, val: Tensor, test: Tensor) -> DataBundle:
    """A bundle whose teacher, student and scratch models all train on the same rows."""
    train_data = data.subset(train, name="train")
    return DataBundle(info=info, teacher_train=train_data, student_train=train_data, scratch_train=train_data,
                      val=data.subset(val, name="val") if len(val) else None, test=data.subset(test, name="test"))


def student_and_scratch_train(train: TensorData, spec: DataRequest,
                              where: str = "data") -> tuple[TensorData, TensorData]:
    """(student's, scratch baseline's) training sets from the teacher's `train` (with per-row `labels`), as
    `spec.student_labels`, `spec.transfer_set` and `spec.split_seed` say (see `labelled_split`)."""
    return labelled_split(train, spec.student_labels, spec.transfer_set, spec.split_seed, where)


def labelled_split(train: TensorData, student_labels: int | None, transfer_set: bool, seed: int,
                   where: str = "data") -> tuple[TensorData, TensorData]:
    """(student's, scratch baseline's) training sets from the teacher's `train`.

    One place for every labelled source (arrays, text:stdlib_topics, text:file), so `student_labels` and
    `transfer_set` mean the same everywhere: the student keeps `student_labels` labelled rows and, with
    `transfer_set`, every other row with labels -100 (teacher-driven losses only); the scratch baseline gets the
    labelled rows alone. Errors name `{where}.student_labels`.
    """
    if "labels" not in train.tensors:
        if student_labels is not None:
            raise RecipeError(f"{where}.student_labels: the training data has no labels to limit; remove it.")
        return train, train
    labelled = _labelled_rows(train.tensors["labels"].numpy(), student_labels, seed, where)
    scratch_train = train.subset(labelled, name="train (labelled)")
    if student_labels is None or not transfer_set:
        return train.subset(labelled, name="train (student)"), scratch_train
    labels = torch.full((len(train),), IGNORE_INDEX, dtype=torch.long)
    labels[labelled] = train.tensors["labels"][labelled]
    return train.with_tensor("labels", labels), scratch_train


def _labelled_rows(y_train: np.ndarray, student_labels: int | None, seed: int, where: str) -> Tensor:
    """Rows of the training split whose labels the student may use (a stratified subset, fixed by `seed`)."""
    n = len(y_train)
    if student_labels is None or student_labels >= n:
        return torch.arange(n)
    num_classes = len(np.unique(y_train))
    if student_labels < num_classes:
        raise RecipeError(
            f"{where}.student_labels: {student_labels} labelled samples cannot cover {num_classes} classes; "
            f"use at least {num_classes}."
        )
    from sklearn.model_selection import train_test_split  # only a limited label budget needs it

    rows, _ = train_test_split(np.arange(n), train_size=student_labels, random_state=seed,
                               stratify=stratify(y_train))
    return torch.from_numpy(np.sort(rows))


__all__ = ["DataBundle", "DataRequest", "labelled_split", "permutation_split", "shared_rows_bundle",
           "stratified_split", "stratify", "student_and_scratch_train"]
