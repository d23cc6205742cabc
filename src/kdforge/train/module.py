"""The two sides of a distillation step: the frozen teacher, and the trainable student + loss module.

Both hold forward hooks (`Capture`) on the user's models; `close()` (or `with`) removes them. The step's types,
`TeacherSource` and `StepFn`, are defined with the losses (`kdforge.losses.protocols`) and re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from kdforge.capture import Capture
from kdforge.losses.base import Outputs, Targets, WeightedSum, counted_rows
from kdforge.losses.protocols import StepFn, TeacherSource
from kdforge.models.forward import call_model, logits_of
from kdforge.types import Batch

__all__ = ["Closable", "DistillModule", "OnlineTeacher", "StepFn", "TeacherSource", "counted_entries", "standard_step",
           "targets_of"]


def targets_of(batch: Mapping[str, Tensor]) -> Targets:
    return Targets(labels=batch.get("labels"), mask=batch.get("mask"), index=batch.get("index"),
                   tokens=batch.get("attention_mask"), batch=batch)


def counted_entries(batch: Mapping[str, Tensor]) -> Tensor:
    """The number of entries a batch's loss averages over, as a 0-dim int64 tensor: for token rows (labels or
    mask shaped (B, T)) the tokens that count (`Targets.mask` True and label not -100, as `token_kd` and `ce`
    count them); for other batches the rows. Several processes weight their losses by their share of it."""
    labels, mask = batch.get("labels"), batch.get("mask")
    shape = next((t.shape for t in (labels, mask) if t is not None and t.dim() >= 2), None)
    if shape is None:
        return torch.tensor(len(next(iter(batch.values()))))
    device = (labels if labels is not None else mask).device
    return counted_rows(shape, Targets(labels=labels, mask=mask), device).sum()


class Closable:
    """`with x:` calls `x.close()` on the way out (removing its hooks), also when training raised."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OnlineTeacher(Closable):
    """Runs the teacher forward under no_grad in eval mode, with its taps captured.

    `where` names the taps in error messages (the application passes e.g. "recipe.taps.teacher").
    """

    def __init__(self, model: nn.Module, inputs: list[str], taps: Mapping[str, str] | None = None,
                 where: str = "taps.teacher") -> None:
        self.model = model.eval().requires_grad_(False)
        self.inputs = inputs
        self.capture = Capture(model, taps or {}, owner="teacher", where=where)

    def prepare(self, accelerator) -> None:
        self.model = accelerator.prepare_model(self.model, evaluation_mode=True)

    def __call__(self, batch: Batch) -> Outputs:
        # A plain no_grad block: the decorator form builds a new context object per call (a step's cost on a
        # tiny model); without taps the capture block is skipped, it would only record nothing.
        with torch.no_grad():
            if not self.capture.taps:
                return Outputs(logits=logits_of(call_model(self.model, batch, self.inputs)))
            with self.capture:
                logits = logits_of(call_model(self.model, batch, self.inputs))
        return Outputs(logits=logits, features=dict(self.capture.features))

    def close(self) -> None:
        """Detach the hooks; the teacher model is left as it was."""
        self.capture.close()


class DistillModule(Closable, nn.Module):
    """Student plus loss in one module, so the optimizer, `accelerate.prepare`, DDP and checkpoints see the
    loss's trainable parts (projectors, embeddings) along with the student.

    Args:
        student: The model being trained.
        loss: The weighted loss terms (which ones count at a step is the schedule's business).
        inputs: Batch keys passed to the student's forward.
        taps: tap name -> dotted module path of the student features the losses read.
        where: Names the taps in error messages (the application passes e.g. "recipe.taps.student").
    """

    def __init__(self, student: nn.Module, loss: WeightedSum, inputs: list[str],
                 taps: Mapping[str, str] | None = None, where: str = "taps.student") -> None:
        super().__init__()
        self.student = student
        self.loss = loss
        self.inputs = inputs
        self.taps = dict(taps or {})
        self.capture = Capture(student, self.taps, owner="student", where=where)
        # Decided once: most losses read no extra views, and asking every term at every step costs a tiny
        # model's step a few percent (the terms a schedule activates are asked only when one can want views).
        self._may_want_views = any(term.student_views for term in loss.terms.values())
        # The batch the terms last saw (GKD's step swaps in student rollouts): several processes weight their
        # losses by its counted entries (`counted_entries`); a reference, nothing is computed in one process.
        self.last_batch: Batch | None = None

    def _student_outputs(self, batch: Batch) -> Outputs:
        if not self.taps:
            logits, features = logits_of(call_model(self.student, batch, self.inputs)), {}
        else:
            with self.capture:
                logits = logits_of(call_model(self.student, batch, self.inputs))
            features = dict(self.capture.features)
        if not self._may_want_views:
            return Outputs(logits=logits, features=features)
        # Extra passes in train mode draw new dropout masks: the "views" SD-Dropout compares.
        views = [logits_of(call_model(self.student, batch, self.inputs)) for _ in range(self.loss.student_views)]
        return Outputs(logits=logits, features=features, views=views)

    def forward(self, batch: Batch, teacher: Outputs) -> dict[str, Tensor]:
        self.last_batch = batch
        return self.loss(self._student_outputs(batch), teacher, targets_of(batch))

    def close(self) -> None:
        """Detach the hooks from the student; the student itself is left as it was."""
        self.capture.close()


def standard_step(module: nn.Module, teacher: TeacherSource | None, batch: Batch) -> dict[str, Tensor]:
    """Teacher forward (when a loss needs it), then student forward and loss terms."""
    teacher_outputs = teacher(batch) if teacher is not None else Outputs()
    return module(batch, teacher_outputs)
