"""Hofstätter, Althammer, Schröder, Sertkan & Hanbury, "Improving Efficient Neural Ranking Models with
Cross-Architecture Knowledge Distillation", 2020.

https://arxiv.org/abs/2010.02666
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.losses.functional import shape_of
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


def margins(scores: Tensor) -> Tensor:
    """(B, 1 + n) relevance scores, positive first -> (B, n) margins score(positive) - score(negative_j)."""
    return scores[:, :1] - scores[:, 1:]


@LOSSES.register(
    "margin_mse",
    example={},
    paper="Hofstätter et al. 2020, https://arxiv.org/abs/2010.02666",
    summary="retrieval: MSE between the student's and the teacher's score margins (positive minus negative "
            "passages), e.g. cross-encoder -> dual encoder",
)
class MarginMSELoss(DistillLoss):
    """Margin-MSE: a ranking student learns the teacher's score *differences*, not its raw scores.

    Each row holds the relevance scores of one query with its positive passage first and n negatives after it:
    student (B, 1 + n) (e.g. dot products of a dual encoder), teacher (B, 1 + n) (e.g. a cross-encoder's
    logits). loss = mean over rows and negatives of ((s_pos - s_neg) - (t_pos - t_neg))². The two models'
    scores may live on different scales and offsets; only margins are matched. The paper uses one negative
    (B, 2); more negatives average the per-negative terms.

    Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
    Distillation", 2020. https://arxiv.org/abs/2010.02666

    Example:
        >>> import torch
        >>> loss = MarginMSELoss()
        >>> loss(Outputs(logits=torch.tensor([[3.0, 1.0]])), Outputs(logits=torch.tensor([[10.0, 9.0]])), Targets())
        tensor(1.)
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        s, t = student.logits, teacher.logits
        if s is None or t is None:
            raise ValueError("margin_mse: both models must return (B, 1 + n) relevance scores as their output.")
        check_same_shape(s, t, what="margin_mse student and teacher scores")
        if s.dim() != 2 or s.shape[1] < 2:
            raise ShapeMismatchError(
                f"margin_mse: scores must be (B, 1 + n), the positive passage first, with n >= 1 negatives; "
                f"got {shape_of(s)}.")
        return F.mse_loss(margins(s), margins(t))
