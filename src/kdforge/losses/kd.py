"""Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", NIPS DL Workshop 2014.

https://arxiv.org/abs/1503.02531
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.base import DistillLoss, Outputs, Targets, counted_rows
from kdforge.losses.sampled import SPARSE_SIGNALS, signal_kl, temperature_refusal
from kdforge.losses.sparse import TopK, sparse_kl
from kdforge.registry import LOSSES
from kdforge.validation import check_positive, check_same_shape


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T² · KL(p_teacher || p_student) on (N, K) logits softened by T, averaged over the N rows."""
    s = F.log_softmax(student_logits / temperature, dim=-1)
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    # F.kl_div(input, target) computes KL(target || input): the teacher is the target.
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature**2


@LOSSES.register(
    "kd",
    example={"temperature": 4.0},
    paper="Hinton et al. 2015, https://arxiv.org/abs/1503.02531",
    summary="soft targets: T²·KL(teacher || student) at temperature T",
)
class KDLoss(DistillLoss):
    """Soft-target distillation: match the teacher's temperature-softened class distribution.

    loss = T² · KL(softmax(z_t / T) || softmax(z_s / T)), averaged over samples (`batchmean`). The T² keeps
    the gradient scale independent of T (Hinton et al., section 2). Temperature divides both models' logits.
    For (B, T, V) sequence logits every position counts as a row, unless `Targets.mask` marks some False.
    A teacher given as top-k logits (`TopK`, from a top-k cache) is read through `sparse_kl`: no dense
    teacher tensor is built.

    Args:
        temperature: Softening temperature T > 0; typical values are 1 to 8.

    Example:
        >>> import torch
        >>> loss = KDLoss(temperature=4.0)
        >>> loss(Outputs(logits=torch.randn(8, 10)), Outputs(logits=torch.randn(8, 10)), Targets()).shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature", "KDLoss")

    def sparse_refusal(self, kind: str) -> str | None:
        """A top-k cache is read at any temperature (sparse_kl honours it, the mask and both tails); a sampled or
        top-k + tail cache holds the teacher at temperature 1 only (`kdforge.losses.sampled`)."""
        return None if kind == "topk" or self.temperature == 1.0 else temperature_refusal(kind)

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        mask = self._counted(student.logits, targets)
        if isinstance(teacher.logits, SPARSE_SIGNALS):
            return signal_kl(student.logits, teacher.logits, self.temperature, mask=mask)
        if isinstance(teacher.logits, TopK):
            return sparse_kl(student.logits, teacher.logits, self.temperature, teacher.logits.tail or "uniform",
                             mask=mask)
        check_same_shape(student.logits, teacher.logits, what="kd: student and teacher logits",
                         hint="Teacher and student must predict the same classes.")
        s, t = student.logits.flatten(0, -2), teacher.logits.flatten(0, -2)  # (N, K)
        if mask is not None:
            keep = mask.flatten()
            s, t = s[keep], t[keep]
        return soft_kl(s, t, self.temperature)

    @staticmethod
    def _counted(logits: Tensor, targets: Targets) -> Tensor | None:
        """The rows that count, shaped like the logits' rows: `Targets.mask`, and for sequences (B, T, V) labels
        -100 dropped too, as `token_kd` counts them (None: every row). Classification labels are not a mask:
        unlabelled transfer rows keep their soft targets."""
        sequence = logits.dim() >= 3 and targets.labels is not None and targets.labels.shape == logits.shape[:-1]
        if targets.mask is None and not sequence:
            return None
        return counted_rows(logits.shape[:-1], targets, logits.device).reshape(logits.shape[:-1])
