"""Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022.

https://arxiv.org/abs/2203.08679 (authors' code: https://github.com/megvii-research/mdistiller)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.registry import LOSSES
from kdforge.types import IGNORE_INDEX
from kdforge.validation import check_positive, check_same_shape


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor,
              temperature: float) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD) on (N, K) logits with (N,) target classes, each T²-scaled and averaged over the N rows.

    Computed in log space (log p_target and log(1 - p_target) = logsumexp of the non-target log-probs), so a
    confident model gives no log(0); the authors' code takes log of the binary probabilities directly.
    """
    target = F.one_hot(labels, student_logits.shape[-1]).bool()  # (N, K)
    n, k = student_logits.shape
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)  # (N, K)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)

    def binary(log_p: Tensor) -> Tensor:  # (N, 2): log [p_target, 1 - p_target]   (Eq. 2 of the paper)
        log_target = log_p[target].view(n, 1)
        log_rest = log_p.masked_select(~target).view(n, k - 1).logsumexp(dim=-1, keepdim=True)
        return torch.cat([log_target, log_rest], dim=-1)

    tckd = F.kl_div(binary(log_p_s), binary(log_p_t), reduction="batchmean", log_target=True)
    # NCKD: KL between the distributions over the K-1 non-target classes, renormalised (Eq. 3).
    s_rest = (student_logits / temperature).masked_select(~target).view(n, k - 1)  # (N, K-1)
    t_rest = (teacher_logits / temperature).masked_select(~target).view(n, k - 1)
    nckd = F.kl_div(F.log_softmax(s_rest, dim=-1), F.log_softmax(t_rest, dim=-1), reduction="batchmean",
                    log_target=True)
    return tckd * temperature**2, nckd * temperature**2


@LOSSES.register(
    "dkd",
    example={"alpha": 1.0, "beta": 8.0, "temperature": 4.0},
    paper="Zhao et al. 2022, https://arxiv.org/abs/2203.08679",
    summary="decoupled KD: alpha·TCKD (target vs rest) + beta·NCKD (among non-target classes); needs labels",
)
class DKDLoss(DistillLoss):
    """Decoupled KD: the KD loss split into a target-class term and a non-target-class term, weighted apart.

    With b = [p_target, 1 - p_target] and p_hat the softmax over the non-target classes only (all at
    temperature T):
        TCKD = T² · KL(b_teacher || b_student),   NCKD = T² · KL(p_hat_teacher || p_hat_student)
        loss = alpha · TCKD + beta · NCKD,  averaged over the labelled rows (`batchmean`).
    Classic KD equals TCKD + (1 - p_target_teacher) · NCKD (Eq. 4 of the paper); DKD frees NCKD's weight.

    Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022.
    https://arxiv.org/abs/2203.08679. The authors' code also ramps the loss up over the first 20 epochs;
    here that is a per-term schedule in the recipe, not part of the loss.

    Args:
        alpha: Weight of TCKD, >= 0 (the paper uses 1).
        beta: Weight of NCKD, >= 0 (8 on CIFAR-100, 0.5 on ImageNet in the paper).
        temperature: Softening temperature T > 0 (4 on CIFAR-100, 1 on ImageNet).
        pseudo_labels: Rows without a label (-100: unlabelled transfer-set samples) take the teacher's top-1
            class as their target. When False they are skipped, and a batch with no labelled row gives 0.

    Shapes: logits (B, K) with labels (B,), or (B, T, V) with labels (B, T); K >= 2. Rows where
    `Targets.mask` is False are skipped.

    Example:
        >>> import torch
        >>> loss = DKDLoss(alpha=1.0, beta=8.0, temperature=4.0)
        >>> s, t = Outputs(logits=torch.randn(8, 10)), Outputs(logits=torch.randn(8, 10))
        >>> loss(s, t, Targets(labels=torch.randint(0, 10, (8,)))).shape
        torch.Size([])
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
                 pseudo_labels: bool = False) -> None:
        super().__init__()
        for value, name in ((alpha, "alpha"), (beta, "beta")):
            if not value >= 0:  # written this way so NaN is rejected too
                raise ValueError(f"The {name!r} parameter of DKDLoss must be >= 0. Got {value!r} instead.")
        self.alpha, self.beta = alpha, beta
        self.temperature = check_positive(temperature, "temperature", "DKDLoss")
        self.pseudo_labels = bool(pseudo_labels)

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        check_same_shape(student.logits, teacher.logits, what="dkd: student and teacher logits",
                         hint="Teacher and student must predict the same classes.")
        if student.logits.shape[-1] < 2:
            raise ValueError(f"DKDLoss needs at least 2 classes; the logits have {student.logits.shape[-1]}.")
        if targets.labels is None:
            raise ValueError("DKDLoss needs labels (the target class splits the distribution), but the batch has "
                             "none. Use `kd` for unlabelled data, or set pseudo_labels: true.")
        s, t = student.logits.flatten(0, -2), teacher.logits.flatten(0, -2)  # (N, K)
        labels = targets.labels.flatten()  # (N,)
        if self.pseudo_labels:
            labels = torch.where(labels == IGNORE_INDEX, t.argmax(dim=-1), labels)
        keep = labels != IGNORE_INDEX
        if targets.mask is not None:
            keep = keep & targets.mask.flatten().bool()
        s, t, labels = s[keep], t[keep], labels[keep]
        if s.shape[0] == 0:
            return student.logits.sum() * 0.0  # keeps the graph (and DDP's gradient sync) intact
        tckd, nckd = dkd_terms(s, t, labels, self.temperature)
        return self.alpha * tckd + self.beta * nckd
