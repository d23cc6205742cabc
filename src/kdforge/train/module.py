"""The two sides of a distillation step: the frozen teacher, and the trainable student + loss module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from kdforge.capture import Capture, resolve_module
from kdforge.data.tensors import Batch
from kdforge.errors import RecipeError
from kdforge.losses.base import Outputs, Targets, WeightedSum
from kdforge.models.forward import call_model, logits_of


def targets_of(batch: Mapping[str, Tensor]) -> Targets:
    return Targets(labels=batch.get("labels"), mask=batch.get("mask"), index=batch.get("index"),
                   tokens=batch.get("attention_mask"))


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
        self.student_taps = dict(taps or {})
        self.frozen: list[nn.Parameter] = []  # held still by a progressive stage (see drop_frozen_grads)
        self._check_progressive_order()

    def set_step(self, step: int) -> None:
        """Tell step-windowed loss terms which optimizer step comes next, and hold still the student layers
        below each progressive term's current stage (a function of the step, so a resumed run agrees)."""
        self.loss.set_step(step)
        frozen_taps, training_taps = self.loss.progressive_taps()
        training = {id(p) for tap in training_taps for p in self._tapped(tap).parameters()}
        frozen = {id(p): p for tap in sorted(frozen_taps) for p in self._tapped(tap).parameters()}
        self.frozen = [p for key, p in frozen.items() if key not in training]

    def drop_frozen_grads(self) -> None:
        """Called between backward and the optimizer step. A zero gradient would still move weights through
        Adam's momentum and weight decay; a missing one makes every torch optimizer skip the parameter."""
        for p in self.frozen:
            p.grad = None

    def _tapped(self, tap: str) -> nn.Module:
        return resolve_module(self.student, self.student_taps[tap])

    def _check_progressive_order(self) -> None:
        """Progressive stages must go bottom layer first: stage k freezes the layers of stages < k, which is
        only "the layers below" when the tapped modules come in the student's own module order."""
        order = {name: i for i, (name, _) in enumerate(self.student.named_modules())}
        for name, stages in self.loss.stages.items():
            if any(tap not in self.student_taps for stage in stages for tap in stage):
                return  # preflight names the undeclared tap
            # each stage's lowest tapped module (a TinyBERT stage taps a layer and its query/key projections)
            firsts = [min(stage, key=lambda tap: order.get(self.student_taps[tap], -1)) for stage in stages]
            for k in range(1, len(firsts)):
                below, above = firsts[k - 1], firsts[k]
                if order.get(self.student_taps[above], -1) < order.get(self.student_taps[below], -1):
                    raise RecipeError(
                        f"loss term {name!r}: progressive_steps trains its pairs bottom layer first, but pair {k} "
                        f"(student tap {above!r} = {self.student_taps[above]!r}) comes before pair {k - 1} "
                        f"({below!r} = {self.student_taps[below]!r}) in the student. List the pairs from the "
                        "lowest layer up.")

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
