"""Cross-entropy on the ground-truth labels: the hard-label term beside a distillation loss."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.registry import LOSSES
from kdforge.types import IGNORE_INDEX
from kdforge.validation import check_probability


@LOSSES.register("ce", example={}, paper="(standard supervised loss)", summary="cross-entropy on true labels")
class CELoss(DistillLoss):
    """Cross-entropy between student logits and the true labels; unlabelled entries are skipped.

    loss = mean over labelled entries of -log softmax(z_s)[y]. Entries whose label is -100 (unlabelled
    transfer-set samples, padding tokens) do not count. A batch with no labelled entry gives 0, so a
    transfer set mixed with a few labelled samples trains without special cases.

    Hinton's alpha·CE + (1-alpha)·KD is two recipe terms, `ce` and `kd`, each with its own weight.

    Args:
        label_smoothing: Mass moved from the true class to the uniform distribution, in [0, 1).

    Shapes: logits (B, K) with labels (B,), or (B, T, V) with labels (B, T).

    Example:
        >>> import torch
        >>> loss = CELoss()
        >>> loss(Outputs(logits=torch.zeros(2, 4)), Outputs(), Targets(labels=torch.tensor([0, 3]))).item()
        1.386...
    """

    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_probability(label_smoothing, "label_smoothing", "CELoss")
        self.label_smoothing = label_smoothing

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        if targets.labels is None:
            raise ValueError("CELoss needs labels, but the batch has none. Drop the `ce` term for unlabelled data.")
        logits = student.logits.flatten(0, -2)  # (N, K)
        labels = targets.labels.flatten()  # (N,)
        labelled = labels != IGNORE_INDEX
        if not bool(labelled.any()):
            return logits.sum() * 0.0  # keeps the graph (and DDP's gradient sync) intact
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, label_smoothing=self.label_smoothing)
        return loss
