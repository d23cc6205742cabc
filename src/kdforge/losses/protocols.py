"""The training step's types: where teacher outputs come from, and one step's signature.

They live with the losses (importing torch, `kdforge.types` and `losses.base` only) so that a method which
changes the step (GKD's on-policy rollouts) can be written against them, and the train layer implements and
calls them, without the losses importing the train layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from kdforge.losses.base import Outputs
from kdforge.types import Batch


@runtime_checkable
class TeacherSource(Protocol):
    """Where teacher outputs come from during training: a model run online, or a store read by sample id.

    `prepare` places whatever the source needs on the accelerator's device (once, before the loop);
    `__call__` returns the teacher `Outputs` for a batch, without gradients; `close` releases it after training.
    """

    def prepare(self, accelerator: Any) -> None: ...

    def __call__(self, batch: Batch) -> Outputs: ...

    def close(self) -> None: ...


class StepFn(Protocol):
    """One training step: teacher outputs (None when no loss needs them), student forward and the loss terms,
    as the dict `WeightedSum` returns ({"loss": total, <term>: value, ...}). The module is the student + loss
    module, possibly wrapped by DistributedDataParallel."""

    def __call__(self, module: nn.Module, teacher: TeacherSource | None, batch: Batch) -> dict[str, Tensor]: ...


#: How a method changes the step: given the standard step, it returns its own (see `LossInfo.step`).
StepWrapper = Callable[[StepFn], StepFn]
