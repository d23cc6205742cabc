"""The Python entry point for distilling modules you already hold: `kdforge.distill(teacher, student, data)`."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdforge.build import build_loss, make_accelerator, preflight
from kdforge.data import DataBundle, load_data
from kdforge.data.tensors import TensorData
from kdforge.errors import RecipeError
from kdforge.evaluate import accuracy_summary, agreement_summary, positions, predict_logits, validator
from kdforge.models import DataInfo, count_params
from kdforge.recipe import DataSpec, LossTerm, TrainConfig
from kdforge.train.loop import TrainJob, fit, steps_for
from kdforge.train.module import DistillModule, OnlineTeacher

LossLike = str | LossTerm | Mapping[str, Any]


@dataclass
class DistillResult:
    """What `distill` measured: test metrics of teacher and student, and the validation history."""

    teacher: dict[str, float]
    student: dict[str, float]
    evals: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    out_dir: Path | None = None


def _as_term(loss: LossLike, i: int) -> LossTerm:
    if isinstance(loss, LossTerm):
        return loss
    if isinstance(loss, str):
        return LossTerm(name=loss)
    if isinstance(loss, Mapping):
        return LossTerm(**loss)
    raise RecipeError(f"losses[{i}]: expected a loss name, a dict or a LossTerm; got {type(loss).__name__}.")


def _tensor_split(split: Any, name: str) -> TensorData:
    if isinstance(split, TensorData):
        return split
    if isinstance(split, Mapping):
        return TensorData({k: torch.as_tensor(v) for k, v in split.items()}, name=name)
    x, y = split
    return TensorData({"x": torch.as_tensor(np.asarray(x, dtype=np.float32)),
                       "labels": torch.as_tensor(np.asarray(y, dtype=np.int64))}, name=name)


def as_bundle(data: Any) -> DataBundle:
    """Accept a DataBundle, a DataSpec, a source name ('sklearn:digits'), or {'train', 'test'[, 'val']} splits
    given as (X, y) pairs, dicts of arrays, or TensorData."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, str):
        data = DataSpec(source=data)
    if isinstance(data, DataSpec):
        return load_data(data)
    if isinstance(data, Mapping) and {"train", "test"} <= set(data):
        splits = {k: _tensor_split(v, k) for k, v in data.items()}
        train = splits["train"]
        labels = torch.cat([s.tensors["labels"].flatten() for s in splits.values() if "labels" in s.tensors])
        info = DataInfo(tuple(train.tensors["x"].shape[1:]) if "x" in train.tensors else (), int(labels.max()) + 1)
        return DataBundle(info, train, train, train, splits.get("val"), splits["test"])
    raise RecipeError("data: give a DataSpec, a source name like 'sklearn:digits', or a dict with 'train' and "
                      "'test' splits as (X, y) pairs.")


def distill(teacher: nn.Module, student: nn.Module, data: Any, losses: Sequence[LossLike] = ("kd", "ce"),
            train: TrainConfig | None = None, taps: Mapping[str, Mapping[str, str]] | None = None,
            inputs: Sequence[str] = ("x",), out_dir: str | Path | None = None, resume: bool = False,
            confidence: float = 0.95) -> tuple[nn.Module, DistillResult]:
    """Train `student` to imitate `teacher` on `data` and measure how well it does.

    Args:
        teacher: A trained module; it is put in eval mode and frozen.
        student: The module to train (in place).
        data: See `as_bundle`. The student trains on the training split; validation (if any) runs each epoch.
        losses: Loss names or `{"name": ..., "weight": ..., **params}` dicts, e.g.
            `[{"name": "kd", "weight": 0.9, "temperature": 4.0}, {"name": "ce", "weight": 0.1}]`.
        train: Training settings (`TrainConfig`); defaults to 10 epochs of Adam at lr 1e-3.
        taps: `{"student": {name: module.path}, "teacher": {...}}` for feature losses.
        inputs: Batch keys passed to both models' forward.
        out_dir: Where checkpoints and the log go; a temporary folder (deleted afterwards) when None.
        resume: Continue from the latest checkpoint in `out_dir`.
        confidence: Level of the reported Clopper-Pearson intervals.

    Returns:
        The trained student and a `DistillResult` with test accuracy and teacher agreement.
    """
    bundle = as_bundle(data)
    cfg = train or TrainConfig()
    taps = dict(taps or {})
    unknown = set(taps) - {"student", "teacher"}
    if unknown:
        raise RecipeError(f"taps: unknown side(s) {sorted(unknown)}; use 'student' and 'teacher'.")
    inputs = list(inputs)
    loss = build_loss([_as_term(term, i) for i, term in enumerate(losses)])
    module = DistillModule(student, loss, inputs, taps.get("student"))
    online = OnlineTeacher(teacher, inputs, taps.get("teacher")) if loss.needs_teacher else None
    preflight(module, online, bundle.student_train, (set(taps.get("student", {})), set(taps.get("teacher", {}))))
    validate = None
    if bundle.val is not None:
        validate = validator(bundle.val, inputs, predict_logits(teacher, bundle.val, inputs))
    else:
        cfg = cfg.model_copy(update={"select": "last", "patience": None})
    with tempfile.TemporaryDirectory(prefix="kdforge-") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        job = TrainJob("student", module, online, bundle.student_train, cfg,
                       steps_for(cfg, len(bundle.student_train)), folder, validate)
        summary = fit(job, make_accelerator(cfg.mixed_precision), resume=resume)
    module.capture.remove()
    if online is not None:
        online.close()
    labels = bundle.test.tensors["labels"]
    teacher_logits = predict_logits(teacher, bundle.test, inputs)
    student_logits = predict_logits(student, bundle.test, inputs)
    flat = positions(bundle.test)  # token tasks: agreement counts the positions accuracy counts
    result = DistillResult(
        teacher={**accuracy_summary(labels, teacher_logits, confidence), "params": count_params(teacher)},
        student={**accuracy_summary(labels, student_logits, confidence),
                 **agreement_summary(flat(teacher_logits), flat(student_logits), confidence),
                 "params": count_params(student)},
        evals=summary.evals, steps=summary.steps, seconds=summary.seconds,
        out_dir=Path(out_dir) if out_dir is not None else None,
    )
    return student, result
