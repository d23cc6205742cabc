"""Logit matching by squared error (Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014).

https://arxiv.org/abs/1312.6184
"""

from __future__ import annotations

from torch import Tensor

from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


@LOSSES.register(
    "logit_mse",
    example={},
    paper="Ba & Caruana 2014, https://arxiv.org/abs/1312.6184",
    summary="mean squared error between student and teacher logits",
)
class LogitMSELoss(DistillLoss):
    """Regress the student's logits onto the teacher's.

    loss = mean over rows of sum over classes of (z_s - z_t)² / K, i.e. the element-wise mean squared error.
    Hinton et al. show KD tends to this at high temperature when logits are zero-mean; Ba & Caruana use it
    directly. Rows where `Targets.mask` is False are skipped.

    Shapes: (B, K) or (B, T, V) logits, equal for both models.

    Example:
        >>> import torch
        >>> LogitMSELoss()(Outputs(logits=torch.ones(2, 3)), Outputs(logits=torch.zeros(2, 3)), Targets()).item()
        1.0
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        check_same_shape(student.logits, teacher.logits, what="logit_mse: student and teacher logits")
        s, t = student.logits.flatten(0, -2), teacher.logits.flatten(0, -2)  # (N, K)
        if targets.mask is not None:
            keep = targets.mask.flatten().bool()
            s, t = s[keep], t[keep]
        return (s - t).pow(2).mean()
