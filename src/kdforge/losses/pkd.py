"""Sun, Cheng, Gan & Liu, "Patient Knowledge Distillation for BERT Model Compression", EMNLP 2019.

https://arxiv.org/abs/1908.09355 (authors' code: https://github.com/intersun/PKD-for-BERT-Model-Compression)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import ShapeMismatchError
from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import feature, shape_of
from kdforge.models.adapters import Projector
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape

POOLS = ("cls", "mean")


def pooled_state(x: Tensor, pool: str, mask: Tensor | None = None) -> Tensor:
    """One vector per sample: (B, D) as is; (B, T, D) -> the first ([CLS]) token or the (masked) token mean;
    (B, C, H, W) -> the spatial mean (a conv net has no [CLS] token)."""
    if x.dim() == 2:
        return x
    if x.dim() == 4:
        return x.mean(dim=(2, 3))  # (B, C)
    if x.dim() == 3:
        if pool == "cls":
            return x[:, 0]  # (B, D)
        if mask is None:
            return x.mean(dim=1)
        weights = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ShapeMismatchError(f"pkd: features must be (B, D), (B, T, D) or (B, C, H, W); got {shape_of(x)}.")


@LOSSES.register(
    "pkd",
    example={"pairs": [("feat", "feat")]},
    paper="Sun et al. 2019, https://arxiv.org/abs/1908.09355",
    summary="patient KD: squared distance between L2-normalised [CLS]/pooled hidden states of paired layers",
)
class PKDLoss(PairedFeatureLoss):
    """Patient KD's hidden-state loss: the student's intermediate [CLS] states follow the teacher's, after
    L2 normalisation.

    h = pooled state / ||pooled state||₂ per sample; loss = mean over pairs of mean over samples of
    ||h_s - h_t||₂² (in [0, 4]; equal to 2 - 2·cos). The paper (Eq. 5) sums over samples and layers; the
    authors' code averages over elements with F.mse_loss, dividing by the width D as well, so their beta
    (100 to 500 for BERT, D = 768) corresponds to a recipe weight of beta / D here. Pair layers with a layer map:
    `pairs: {map: skip, student: [...], teacher: [...]}` is PKD-Skip, `map: last` is PKD-Last.

    Sun, Cheng, Gan & Liu, "Patient Knowledge Distillation for BERT Model Compression", EMNLP 2019.
    https://arxiv.org/abs/1908.09355

    Args:
        pairs: (student_tap, teacher_tap) names, or a layer-map spec (see `kdforge.layer_maps`).
        pool: For (B, T, D) token states: 'cls' takes the first token (BERT's [CLS], as in the paper), 'mean'
            averages tokens where `Targets.mask` is True. (B, C, H, W) maps are always averaged over space.
        projector: 'none' (the paper: equal hidden sizes) or 'linear', a learned map of the student's pooled
            state to the teacher's width, for models of different widths.

    Shapes: per pair, (B, D), (B, T, D) or (B, C, H, W) for each model; the pooled widths must be equal
    unless projector is 'linear'.

    Example:
        >>> import torch
        >>> loss = PKDLoss(pairs=[("s", "t")])
        >>> s = Outputs(features={"s": torch.randn(2, 5, 16)})
        >>> loss(s, Outputs(features={"t": torch.randn(2, 7, 16)}), Targets()).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict, pool: str = "cls", projector: str = "none") -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "PKDLoss")
        if pool not in POOLS:
            raise ValueError(f"The 'pool' parameter of PKDLoss must be one of {', '.join(POOLS)}. Got {pool!r}.")
        if projector not in ("none", "linear"):
            raise ValueError(f"The 'projector' parameter of PKDLoss must be 'none' or 'linear'. Got {projector!r}.")
        self.pool = pool
        self.projector = projector
        self.projectors = nn.ModuleList([Projector("linear") for _ in self.pairs]) if projector == "linear" else None

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        terms = []
        for i, (s_name, t_name) in self.active_pairs():
            s = feature(student, s_name, "student", "pkd")
            t = feature(teacher, t_name, "teacher", "pkd")
            h_s = pooled_state(s, self.pool, targets.mask)  # (B, D_s)
            h_t = pooled_state(t, self.pool, targets.mask)  # (B, D_t)
            if self.projectors is not None:
                h_s = self.projectors[i](h_s, like=h_t)
            check_same_shape(
                h_s, h_t, what=f"pkd pair ({s_name!r}, {t_name!r}): pooled student {shape_of(s)} vs teacher "
                f"{shape_of(t)} states", hint="Add `projector: linear`, or pair layers of the same width.")
            h_s, h_t = F.normalize(h_s, dim=-1), F.normalize(h_t, dim=-1)
            terms.append((h_s - h_t).pow(2).sum(dim=-1).mean())
        return torch.stack(terms).mean()
