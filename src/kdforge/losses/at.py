"""Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional
Neural Networks via Attention Transfer", ICLR 2017.

https://arxiv.org/abs/1612.03928 (authors' code: https://github.com/szagoruyko/attention-transfer)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import feature, shape_of
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


def attention_map(feat: Tensor, p: float = 2) -> Tensor:
    """(B, C, H, W) -> (B, H*W): mean over channels of |x|^p, flattened, L2-normalised per sample."""
    return F.normalize(feat.abs().pow(p).mean(dim=1).flatten(1), dim=1)


@LOSSES.register(
    "at",
    example={"pairs": [("feat", "feat")]},
    paper="Zagoruyko & Komodakis 2017, https://arxiv.org/abs/1612.03928",
    summary="attention transfer: match L2-normalised spatial attention maps (mean_c |F|^p) of paired layers",
)
class ATLoss(PairedFeatureLoss):
    """Attention transfer: match L2-normalised spatial attention maps of paired layers.

    a = normalize(mean_c |F|^p) over H·W; loss = mean over pairs of mean((a_s - a_t)^2).
    Follows the authors' code (squared error, averaged), not the p-norm of Eq. (2) in the paper;
    see https://github.com/szagoruyko/attention-transfer/issues/34. The authors sum over pairs and multiply
    by beta/2 (beta = 1000); here pairs are averaged, so a recipe weight of beta/2 · n_pairs reproduces it.
    Channel counts may differ between the models; only the spatial size must match.

    Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017. https://arxiv.org/abs/1612.03928

    Args:
        pairs: (student_tap, teacher_tap) names, as declared under `taps:` in the recipe, or a layer-map
            spec ({map: uniform, student: [...], teacher: [...]}, see `kdforge.layer_maps`).
        p: Exponent applied to activations before pooling over channels, > 0 (the paper uses 2).

    Shapes: per pair, student (B, C_s, H, W) and teacher (B, C_t, H, W).

    Example:
        >>> import torch
        >>> loss = ATLoss(pairs=[("s", "t")])
        >>> s = Outputs(features={"s": torch.randn(2, 4, 5, 5)})
        >>> loss(s, Outputs(features={"t": torch.randn(2, 8, 5, 5)}), Targets()).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict, p: float = 2) -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "ATLoss")
        if not p > 0:  # written this way so NaN is rejected too
            raise ValueError(f"The 'p' parameter of ATLoss must be > 0. Got {p!r} instead.")
        self.p = p

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        terms = []
        for _, (s_name, t_name) in self.active_pairs():
            s = feature(student, s_name, "student", "at")
            t = feature(teacher, t_name, "teacher", "at")
            for x, side, name in ((s, "student", s_name), (t, "teacher", t_name)):
                if x.dim() != 4:
                    raise ShapeMismatchError(
                        f"at pair ({s_name!r}, {t_name!r}): the {side} feature {name!r} is {shape_of(x)}; attention "
                        "transfer needs (B, C, H, W) maps. Tap a convolutional layer, or use `fitnet`/`pkd` for "
                        "vectors."
                    )
            a_s = attention_map(s, self.p)  # (B, H*W)
            a_t = attention_map(t, self.p)  # (B, H*W)
            check_same_shape(
                a_s, a_t,
                what=f"at pair ({s_name!r}, {t_name!r}): student {shape_of(s)} vs teacher {shape_of(t)}, "
                     "attention maps",
                hint="Pick layers with equal spatial size (H, W), or pool the larger one.",
            )
            terms.append((a_s - a_t).pow(2).mean())
        return torch.stack(terms).mean()
