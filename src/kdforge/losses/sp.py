"""Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.

https://arxiv.org/abs/1907.09682
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import feature, flat
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


def similarity(feat: Tensor) -> Tensor:
    """(B, ...) -> (B, B): G = Q Q^T over flattened features, each row L2-normalised (Eq. 2-3)."""
    q = flat(feat)  # (B, D)
    return F.normalize(q @ q.t(), p=2, dim=1)


@LOSSES.register(
    "sp",
    example={"pairs": [("feat", "feat")]},
    paper="Tung & Mori 2019, https://arxiv.org/abs/1907.09682",
    summary="similarity-preserving: match the row-normalised B x B sample-similarity matrices",
)
class SPLoss(PairedFeatureLoss):
    """Similarity-preserving KD: samples that activate the teacher similarly should activate the student
    similarly. Compares B x B similarity matrices, so widths and spatial sizes may differ.

    G = row-normalise(Q Q^T) with Q the (B, C·H·W) flattened features; loss = mean over pairs of
    ||G_s - G_t||_F² / B² (Eq. 4). The paper sums over pairs; averaging only changes the scale (the paper's
    gamma, 3000 on CIFAR-10, becomes the recipe weight times the number of pairs).

    Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019. https://arxiv.org/abs/1907.09682

    Args:
        pairs: (student_tap, teacher_tap) names, or a layer-map spec (see `kdforge.layer_maps`).

    Shapes: per pair, student (B, ...) and teacher (B, ...) with the same batch size B.

    Example:
        >>> import torch
        >>> loss = SPLoss(pairs=[("s", "t")])
        >>> s = Outputs(features={"s": torch.randn(4, 8, 3, 3)})
        >>> loss(s, Outputs(features={"t": torch.randn(4, 32)}), Targets()).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict) -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "SPLoss")

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        terms = []
        for _, (s_name, t_name) in self.active_pairs():
            g_s = similarity(feature(student, s_name, "student", "sp"))  # (B, B)
            g_t = similarity(feature(teacher, t_name, "teacher", "sp"))  # (B, B)
            check_same_shape(g_s, g_t, what=f"sp pair ({s_name!r}, {t_name!r}): similarity matrices (batch sizes)",
                             hint="Both models must see the same batch.")
            terms.append((g_s - g_t).pow(2).sum() / g_s.shape[0] ** 2)
        return torch.stack(terms).mean()
