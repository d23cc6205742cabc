"""Zhou et al., "Rocket Launching: A Universal and Efficient Framework for Training Well-performing Light
Net", AAAI 2018. https://arxiv.org/abs/1708.04106
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.registry import LOSSES
from kdforge.types import IGNORE_INDEX
from kdforge.validation import check_positive, check_same_shape


@LOSSES.register(
    "rocket",
    example={"booster": "head2"},
    paper="Zhou et al. 2018, https://arxiv.org/abs/1708.04106",
    summary="online distillation from a booster net sharing the student's lower layers (gradient block)",
    nonzero_at_match="the booster learns from the labels; the hint is zero only when light equals booster",
)
class RocketLoss(DistillLoss):
    """Train a booster branch that shares the student's lower layers, and pull the light net's logits
    towards the booster's, without letting the hint pull the booster back ("gradient block").

    loss = CE(z_booster, y) + hint_weight · mean((z_light - stopgrad(z_booster))²)
    The light net's own cross-entropy is the separate `ce` term. The booster's logits come from a student
    tap (e.g. the `booster` module of `builtin:rocket_mlp`, which runs only in training mode, so the
    deployed student is the light net alone). Unlabelled rows get the hint only.

    Args:
        booster: Student tap name holding the booster's logits (B, K).
        hint_weight: lambda, the weight of the logit hint (the paper uses MSE on logits).

    Example:
        >>> import torch
        >>> z = torch.randn(4, 3)
        >>> s = Outputs(logits=z, features={"b": z.clone()})
        >>> RocketLoss("b")(s, Outputs(), Targets(labels=torch.tensor([0, 1, 2, 0]))).item() > 0
        True
    """

    needs_teacher = False

    def __init__(self, booster: str, hint_weight: float = 1.0) -> None:
        super().__init__()
        if not booster:
            raise ValueError("RocketLoss needs the student tap name of the booster's logits ('booster').")
        self.booster = booster
        self.hint_weight = check_positive(hint_weight, "hint_weight", "RocketLoss")

    def required_taps(self) -> tuple[set[str], set[str]]:
        return {self.booster}, set()

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        booster = student.features[self.booster]
        check_same_shape(student.logits, booster, what=f"rocket: light logits and booster tap {self.booster!r}",
                         hint="tap the booster's output layer (its logits).")
        hint = (student.logits - booster.detach()).pow(2).mean()
        labels = targets.labels
        if labels is None or not bool((labels != IGNORE_INDEX).any()):
            return self.hint_weight * hint + 0.0 * booster.sum()
        return F.cross_entropy(booster, labels, ignore_index=IGNORE_INDEX) + self.hint_weight * hint
