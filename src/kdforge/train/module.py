"""The two sides of a distillation step: the frozen teacher, and the trainable student + loss module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from kdforge.capture import Capture
from kdforge.data.tensors import Batch
from kdforge.losses.base import Outputs, Targets, WeightedSum
from kdforge.models.forward import call_model, logits_of


def targets_of(batch: Mapping[str, Tensor]) -> Targets:
    return Targets(labels=batch.get("labels"), mask=batch.get("mask"), index=batch.get("index"))


@runtime_checkable
class TeacherSource(Protocol):
    """Where teacher outputs come from during training: a model run online, or a store read by sample id.

    `prepare` places whatever the source needs on the accelerator's device (once, before the loop);
    `__call__` returns the teacher `Outputs` for a batch, without gradients.
    """

    def prepare(self, accelerator) -> None: ...

    def __call__(self, batch: Batch) -> Outputs: ...

    def close(self) -> None: ...


class OnlineTeacher:
    """Runs the teacher forward under no_grad in eval mode, with its taps captured."""

    def __init__(self, model: nn.Module, inputs: list[str], taps: Mapping[str, str] | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.inputs = inputs
        self.capture = Capture(model, taps or {}, owner="teacher")

    def prepare(self, accelerator) -> None:
        self.model = accelerator.prepare_model(self.model, evaluation_mode=True)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Outputs:
        with self.capture:
            logits = logits_of(call_model(self.model, batch, self.inputs))
        return Outputs(logits=logits, features=dict(self.capture.features))

    def close(self) -> None:
        """Detach the hooks; the teacher model is left as it was."""
        self.capture.remove()


class DistillModule(nn.Module):
    """Student plus loss in one module, so the optimizer, `accelerator.prepare`, DDP and checkpoints see the
    loss's trainable parts (projectors, embeddings) along with the student.

    With a `peer` (online distillation: deep mutual learning, Zhang et al. 2018), the peer is trained in the
    same step with the same loss terms and the roles swapped: each network learns from the other's
    detached outputs. The peer is then the teacher whose outputs the student's terms see.
    """

    def __init__(self, student: nn.Module, loss: WeightedSum, inputs: list[str],
                 taps: Mapping[str, str] | None = None, peer: nn.Module | None = None,
                 peer_inputs: list[str] | None = None) -> None:
        super().__init__()
        self.student = student
        self.loss = loss
        self.inputs = inputs
        self.capture = Capture(student, taps or {}, owner="student")
        self.peer = peer
        self.peer_inputs = peer_inputs or inputs

    def set_step(self, step: int) -> None:
        """Tell step-windowed loss terms which optimizer step comes next."""
        self.loss.set_step(step)

    def _student_outputs(self, batch: Batch) -> Outputs:
        with self.capture:
            logits = logits_of(call_model(self.student, batch, self.inputs))
        features = dict(self.capture.features)
        # Extra passes in train mode draw new dropout masks: the "views" SD-Dropout compares.
        views = [logits_of(call_model(self.student, batch, self.inputs)) for _ in range(self.loss.student_views)]
        return Outputs(logits=logits, features=features, views=views)

    def forward(self, batch: Batch, teacher: Outputs) -> dict[str, Tensor]:
        student = self._student_outputs(batch)
        targets = targets_of(batch)
        if self.peer is None:
            return self.loss(student, teacher, targets)
        peer_logits = logits_of(call_model(self.peer, batch, self.peer_inputs))
        terms = self.loss(student, Outputs(logits=peer_logits.detach()), targets)
        peer_terms = self.loss(Outputs(logits=peer_logits), Outputs(logits=student.logits.detach()), targets)
        return {**terms, "loss": terms["loss"] + peer_terms["loss"],
                **{f"peer_{name}": value for name, value in peer_terms.items()}}


def standard_step(module: nn.Module, teacher: TeacherSource | None, batch: Batch) -> dict[str, Tensor]:
    """Teacher forward (when a loss needs it), then student forward and loss terms."""
    teacher_outputs = teacher(batch) if teacher is not None else Outputs()
    return module(batch, teacher_outputs)
