"""Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019.

https://arxiv.org/abs/1904.05068 (authors' code: https://github.com/lenscloth/RKD)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import feature, flat, pairwise_distances
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


def distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-D (Eq. 4-5): Huber loss between pairwise distances, each normalised by its mean non-zero distance."""
    d_s = pairwise_distances(student)  # (B, B)
    d_t = pairwise_distances(teacher)
    # Mean over off-diagonal pairs without a data-dependent branch; all-equal rows give 0/eps = 0.
    n_pairs = (d_t > 0).sum().clamp(min=1)
    d_t = d_t / (d_t.sum() / n_pairs).clamp(min=1e-12)
    d_s = d_s / (d_s.sum() / (d_s > 0).sum().clamp(min=1)).clamp(min=1e-12)
    return F.smooth_l1_loss(d_s, d_t, reduction="mean")


def angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-A (Eq. 6-7): Huber loss between cos of the angle at e_j of every triplet (e_i, e_j, e_k)."""

    def cosines(e: Tensor) -> Tensor:  # (B, B, B): <unit(e_i - e_j), unit(e_k - e_j)>
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (B, B, D): row j, column i
        return torch.bmm(diff, diff.transpose(1, 2))

    return F.smooth_l1_loss(cosines(student), cosines(teacher), reduction="mean")


@LOSSES.register(
    "rkd",
    example={"pairs": [("feat", "feat")]},
    paper="Park et al. 2019, https://arxiv.org/abs/1904.05068",
    summary="relational KD: match normalised pairwise distances and triplet angles between samples",
)
class RKDLoss(PairedFeatureLoss):
    """Relational KD: transfer the structure of the batch (distances and angles between samples), not the
    features themselves, so student and teacher widths may differ.

    With ψ_D(i, j) = ||e_i - e_j|| / mu (mu the mean over pairs) and ψ_A(i, j, k) = cos of the angle at e_j:
        loss = distance_weight · Huber(ψ_D^s, ψ_D^t) + angle_weight · Huber(ψ_A^s, ψ_A^t)
    each Huber (smooth L1, delta 1) averaged over all B² pairs / B³ triplets, as in the authors' code; the
    loss is then averaged over tap pairs. Features are flattened to one vector per sample.

    Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019. https://arxiv.org/abs/1904.05068

    Args:
        pairs: (student_tap, teacher_tap) names (the paper uses the final embedding), or a layer-map spec.
        distance_weight: Weight of the distance term, >= 0 (the paper: 25).
        angle_weight: Weight of the angle term, >= 0 (the paper: 50). At least one weight must be > 0.

    Shapes: per pair, student (B, ...) and teacher (B, ...), any widths; the cost is O(B³ · D) for angles.

    Example:
        >>> import torch
        >>> loss = RKDLoss(pairs=[("s", "t")])
        >>> s = Outputs(features={"s": torch.randn(6, 16)})
        >>> loss(s, Outputs(features={"t": torch.randn(6, 32)}), Targets()).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict, distance_weight: float = 25.0,
                 angle_weight: float = 50.0) -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "RKDLoss")
        for value, name in ((distance_weight, "distance_weight"), (angle_weight, "angle_weight")):
            if not value >= 0:  # written this way so NaN is rejected too
                raise ValueError(f"The {name!r} parameter of RKDLoss must be >= 0. Got {value!r} instead.")
        if distance_weight == 0 and angle_weight == 0:
            raise ValueError("RKDLoss: distance_weight and angle_weight are both 0; give at least one a weight > 0.")
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        terms = []
        for _, (s_name, t_name) in self.active_pairs():
            s = flat(feature(student, s_name, "student", "rkd"))  # (B, D_s)
            t = flat(feature(teacher, t_name, "teacher", "rkd"))  # (B, D_t)
            check_same_shape(s[:, :1], t[:, :1], what=f"rkd pair ({s_name!r}, {t_name!r}): batch sizes",
                             hint="Both models must see the same batch.")
            term = s.new_zeros(())
            if self.distance_weight:
                term = term + self.distance_weight * distance_loss(s, t)
            if self.angle_weight:
                term = term + self.angle_weight * angle_loss(s, t)
            terms.append(term)
        return torch.stack(terms).mean()
