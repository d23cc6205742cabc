"""Online distillation: deep mutual learning (Zhang et al., "Deep Mutual Learning", CVPR 2018,
https://arxiv.org/abs/1706.00384).

Student and peer train in the same step with the same loss terms, roles swapped: each network learns from the
other's detached logits. The loop trains a `MutualModule` like a `DistillModule`, with no teacher source: the
peer is the teacher the student's terms see. Only logit-level terms fit (the peer's features are not captured).
"""

from __future__ import annotations

from torch import Tensor, nn

from kdforge.losses.base import Outputs, WeightedSum
from kdforge.models.forward import call_model, logits_of
from kdforge.train.module import Closable, targets_of
from kdforge.types import Batch


class MutualModule(Closable, nn.Module):
    """Student, loss and peer in one module, so the optimizer, DDP and checkpoints see both networks.

    `forward` returns the student's terms, `loss` = student total + peer total, and the peer's terms as `peer_*`.

    Args:
        student: The model being trained (its weights are the run's result).
        peer: The network trained beside it (deep mutual learning's second student).
        loss: The weighted loss terms, applied in both directions.
        inputs: Batch keys passed to the student's forward.
        peer_inputs: Batch keys passed to the peer's forward (default: `inputs`).
    """

    def __init__(self, student: nn.Module, peer: nn.Module, loss: WeightedSum, inputs: list[str],
                 peer_inputs: list[str] | None = None) -> None:
        super().__init__()
        self.student = student
        self.loss = loss  # before the peer: parameters (optimizer, checkpoints) in the order student, loss, peer
        self.peer = peer
        self.inputs = inputs
        self.peer_inputs = peer_inputs or inputs

    def forward(self, batch: Batch, teacher: Outputs) -> dict[str, Tensor]:
        """`teacher` is unused (the loop passes empty outputs: there is no teacher source)."""
        targets = targets_of(batch)
        student_logits = logits_of(call_model(self.student, batch, self.inputs))
        peer_logits = logits_of(call_model(self.peer, batch, self.peer_inputs))
        terms = self.loss(Outputs(logits=student_logits), Outputs(logits=peer_logits.detach()), targets)
        peer_terms = self.loss(Outputs(logits=peer_logits), Outputs(logits=student_logits.detach()), targets)
        return {**terms, "loss": terms["loss"] + peer_terms["loss"],
                **{f"peer_{name}": value for name, value in peer_terms.items()}}

    def close(self) -> None:
        """Nothing to detach: a MutualModule puts no hooks on its networks."""
