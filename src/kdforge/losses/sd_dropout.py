"""Lee, Kim & Lee, "Self-Knowledge Distillation via Dropout", Computer Vision and Image Understanding 2023
(arXiv 2022). https://arxiv.org/abs/2208.05642
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.registry import LOSSES
from kdforge.types import IGNORE_INDEX
from kdforge.validation import check_positive


@LOSSES.register(
    "sd_dropout",
    example={"temperature": 1.0},
    paper="Lee et al. 2022, https://arxiv.org/abs/2208.05642",
    summary="self-distillation between two dropout views of the student (symmetric KL)",
)
class SDDropoutLoss(DistillLoss):
    """Self-distillation between two stochastic views of the student itself; no teacher.

    loss = T² · (KL(p_u || p_v) + KL(p_v || p_u)), p = softmax(z / T), where z_u and z_v are the student's
    logits for the same batch from two forward passes with independent dropout masks. Both directions carry
    gradients, as in the paper's symmetric objective. Add a `ce` term for the labels.

    The views come from the student's own dropout layers (the loop runs one extra forward pass in train mode
    when this term is active). The paper drops out the penultimate feature only; a student whose only
    dropout sits before its classifier (as `builtin:cnn` and `builtin:mlp` with `dropout` do) matches it,
    at the cost of running the layers below twice. A student without dropout gets identical views and
    a zero loss; preflight does not flag it, so give the student dropout.

    By default only labelled rows count (the paper's supervised setting): on an unlabelled transfer set,
    agreement between two views of the student alone is also met by collapsing to one constant prediction,
    which we measured (digits, 100 labels + 1,157 unlabelled rows: 53% accuracy with `rows: all`).

    Args:
        temperature: Softening temperature T > 0 (the paper uses 1).
        rows: 'labelled' (rows whose label is not -100; the whole batch when it has no labels) or 'all'.

    Shapes: logits (B, K); `Outputs.views` holds one more (B, K) tensor.

    Example:
        >>> import torch
        >>> z = torch.randn(4, 3)
        >>> SDDropoutLoss()(Outputs(logits=z, views=[z.clone()]), Outputs(), Targets()).item()
        0.0
    """

    needs_teacher = False
    student_views = 1

    def __init__(self, temperature: float = 1.0, rows: str = "labelled") -> None:
        super().__init__()
        self.temperature = check_positive(temperature, "temperature", "SDDropoutLoss")
        if rows not in ("labelled", "all"):
            raise ValueError(f"The 'rows' parameter of SDDropoutLoss must be 'labelled' or 'all'. Got {rows!r}.")
        self.rows = rows

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        if not student.views:
            raise ValueError("SDDropoutLoss needs a second dropout view in Outputs.views; the loop provides it.")
        t = self.temperature
        u = F.log_softmax(student.logits.flatten(0, -2) / t, dim=-1)  # (N, K)
        v = F.log_softmax(student.views[0].flatten(0, -2) / t, dim=-1)  # (N, K)
        if self.rows == "labelled" and targets.labels is not None:
            keep = targets.labels.flatten() != IGNORE_INDEX
            if not bool(keep.any()):
                return student.logits.sum() * 0.0  # no labelled row in this batch
            u, v = u[keep], v[keep]
        forward_kl = F.kl_div(v, u, reduction="batchmean", log_target=True)  # KL(p_u || p_v)
        backward_kl = F.kl_div(u, v, reduction="batchmean", log_target=True)  # KL(p_v || p_u)
        return (forward_kl + backward_kl) * t**2
