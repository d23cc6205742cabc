"""Sanh, Debut, Chaumond & Wolf, "DistilBERT, a distilled version of BERT: smaller, faster, cheaper and
lighter", NeurIPS EMC² Workshop 2019.

https://arxiv.org/abs/1910.01108 (authors' code: huggingface/transformers, examples/research_projects/distillation)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import as_tokens, feature, token_mask
from kdforge.models.adapters import Projector
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


@LOSSES.register(
    "hidden_cos",
    example={"pairs": [("feat", "feat")]},
    paper="Sanh et al. 2019, https://arxiv.org/abs/1910.01108",
    summary="DistilBERT's cosine loss: 1 - cos between student and teacher hidden states, per real token",
)
class HiddenCosLoss(PairedFeatureLoss):
    """DistilBERT's cosine-embedding loss: align the directions of the student's and teacher's hidden states.

    loss = mean over pairs of mean over real tokens of (1 - cos(h_s, h_t)), where a token is real when
    `Targets.mask` (the batch's `mask`, e.g. the attention mask) is True; all tokens count without a mask.
    DistilBERT's triple loss is three recipe terms: `ce` on the MLM labels, `kd` on the MLM logits ((B, T, V),
    masked by the batch's `mask`) and `hidden_cos` on the last hidden states,
    with weights 2, 5 and 1 in the paper's code (alpha_mlm, alpha_ce, alpha_cos). The authors' code uses
    nn.CosineEmbeddingLoss with target 1 on the masked-in positions, which is this mean.

    Sanh et al., "DistilBERT, a distilled version of BERT", 2019. https://arxiv.org/abs/1910.01108

    Args:
        pairs: (student_tap, teacher_tap) names, or a layer-map spec (see `kdforge.layer_maps`).
        projector: 'none' (DistilBERT: equal widths) or 'linear' (a learned map to the teacher's width).

    Shapes: token states (B, T, D); (B, C, H, W) maps are read as H·W tokens of width C.

    Example:
        >>> import torch
        >>> loss = HiddenCosLoss(pairs=[("s", "t")])
        >>> s, t = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
        >>> loss(Outputs(features={"s": s}), Outputs(features={"t": t}), Targets()).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict, projector: str = "none") -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "HiddenCosLoss")
        if projector not in ("none", "linear"):
            raise ValueError(
                f"The 'projector' parameter of HiddenCosLoss must be 'none' or 'linear'. Got {projector!r}.")
        self.projector = projector
        self.projectors = nn.ModuleList([Projector("linear") for _ in self.pairs]) if projector == "linear" else None

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        terms = []
        for i, (s_name, t_name) in self.active_pairs():
            h_s = as_tokens(feature(student, s_name, "student", "hidden_cos"))
            h_t = as_tokens(feature(teacher, t_name, "teacher", "hidden_cos"))
            if self.projectors is not None:
                h_s = self.projectors[i](h_s, like=h_t)
            check_same_shape(h_s, h_t, what=f"hidden_cos pair ({s_name!r}, {t_name!r}) token states",
                             hint="Add `projector: linear` for models of different widths; tap layers that see "
                                  "the same tokens.")
            dist = 1.0 - F.cosine_similarity(h_s, h_t, dim=-1)  # (B, T)
            mask = token_mask(targets, h_s)
            if mask is None:
                terms.append(dist.mean())
            else:
                terms.append((dist * mask).sum() / mask.sum().clamp(min=1))
        return torch.stack(terms).mean()
