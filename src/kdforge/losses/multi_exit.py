"""Multi-exit self-distillation: Zhang et al., "Be Your Own Teacher: Improve the Performance of Convolutional
Neural Networks via Self Distillation", ICCV 2019 (https://arxiv.org/abs/1905.08094), and Liu et al.,
"FastBERT: a Self-distilling BERT with Adaptive Inference Time", ACL 2020 (https://arxiv.org/abs/2004.02178).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.losses.early_exit import EarlyExit, early_exit_curve
from kdforge.registry import LOSSES
from kdforge.types import IGNORE_INDEX, TensorData
from kdforge.validation import check_positive, check_probability


def pool_feature(feature: Tensor) -> Tensor:
    """(B, C, H, W) -> average-pooled to a 2x2 grid and flattened (a shallow layer's channel means alone lose
    the spatial layout an early classifier needs); (B, T, D) -> the first token ([CLS]); (B, D) unchanged."""
    if feature.dim() == 4:
        return F.adaptive_avg_pool2d(feature, 2).flatten(1)
    if feature.dim() == 3:
        return feature[:, 0]
    return feature.flatten(1)


class ExitHead(nn.Module):
    """Pool an intermediate feature and classify it: the auxiliary exit's classifier (width read lazily)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = nn.LazyLinear(1)  # re-made with the right output width at the first call

    def build(self, num_classes: int) -> None:
        if isinstance(self.classifier, nn.LazyLinear) and self.classifier.out_features != num_classes:
            self.classifier = nn.LazyLinear(num_classes)

    def forward(self, feature: Tensor) -> Tensor:
        return self.classifier(pool_feature(feature))  # (B, K)


def evaluate_exits(loss: MultiExitLoss, student: nn.Module, teacher: nn.Module | None, test: TensorData,
                   inputs: list[str], taps: Mapping[str, str]) -> dict:
    """After training: accuracy, mean exit and latency at a range of entropy thresholds (batch size 1)."""
    runner = EarlyExit(student, [taps[tap] for tap in loss.exits], list(loss.heads), inputs)
    try:
        curve = early_exit_curve(runner, test, thresholds=[0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
    finally:
        runner.remove()
    return {"exits": loss.exits, "curve": curve}


@LOSSES.register(
    "multi_exit",
    example={"exits": ["feat"]},
    paper="Zhang et al. 2019, https://arxiv.org/abs/1905.08094; Liu et al. 2020, https://arxiv.org/abs/2004.02178",
    summary="auxiliary exits on intermediate layers distilled from the final exit (early-exit inference)",
    nonzero_at_match="the exits' classifiers are learned; the loss compares exits with the final output",
    evaluate=evaluate_exits,
)
class MultiExitLoss(DistillLoss):
    """Train classifiers on intermediate layers ("exits") from the labels and from the network's own final
    output, so the network can stop early on easy inputs.

    For each exit i with logits e_i = head_i(pool(feature_i)) and the final logits z (detached: the deepest
    exit is the teacher):
        loss_i = (1 - alpha) · CE(e_i, y) + alpha · T² · KL(softmax(z / T) || softmax(e_i / T))
    and the loss is the mean over exits. Unlabelled rows (label -100) contribute only the KL part. Gradients
    reach the layers below each exit, as in BYOT; BYOT's extra feature-hint term is not included. Train the
    final exit with a separate `ce` (and/or `kd`) term.

    At inference, `kdforge.losses.early_exit.EarlyExit` stops at the first exit whose prediction entropy (divided
    by log K) is below a threshold (FastBERT's speed knob); `report()` measures the accuracy-vs-speed curve.

    Args:
        exits: Student tap names of the intermediate layers, shallow to deep (declared under taps.student).
        alpha: Weight of the self-distillation part against the hard labels, in [0, 1].
        temperature: Softening temperature T > 0 of the KL part.

    Shapes: features (B, C, H, W), (B, T, D) or (B, D); logits (B, K).

    Example:
        >>> import torch
        >>> loss = MultiExitLoss(exits=["h"])
        >>> s = Outputs(logits=torch.randn(4, 3), features={"h": torch.randn(4, 8)})
        >>> loss(s, Outputs(), Targets(labels=torch.tensor([0, 1, 2, 0]))).dim()
        0
    """

    needs_teacher = False

    def __init__(self, exits: list[str], alpha: float = 0.5, temperature: float = 3.0) -> None:
        super().__init__()
        if not exits:
            raise ValueError("MultiExitLoss needs at least one exit tap name; got an empty list.")
        if len(set(exits)) != len(exits):
            raise ValueError(f"MultiExitLoss: exit taps must be distinct; got {exits}.")
        self.exits = list(exits)
        self.alpha = check_probability(alpha, "alpha", "MultiExitLoss")
        self.temperature = check_positive(temperature, "temperature", "MultiExitLoss")
        self.heads = nn.ModuleList(ExitHead() for _ in self.exits)

    def required_taps(self) -> tuple[set[str], set[str]]:
        return set(self.exits), set()

    def exit_logits(self, features: dict[str, Tensor], num_classes: int) -> list[Tensor]:
        """Logits of every exit, shallow to deep."""
        out = []
        for head, tap in zip(self.heads, self.exits, strict=True):
            head.build(num_classes)
            out.append(head(features[tap]))
        return out

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        final = student.logits.detach()  # (B, K): the deepest exit teaches the shallower ones
        t = self.temperature
        soft_target = F.log_softmax(final / t, dim=-1)
        terms = []
        for logits in self.exit_logits(student.features, final.shape[-1]):
            kl = F.kl_div(F.log_softmax(logits / t, dim=-1), soft_target, reduction="batchmean", log_target=True)
            term = self.alpha * kl * t**2
            labels = targets.labels
            if labels is not None and bool((labels != IGNORE_INDEX).any()) and self.alpha < 1:
                term = term + (1 - self.alpha) * F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
            terms.append(term)
        return torch.stack(terms).mean()
