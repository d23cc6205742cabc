"""Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020.

https://arxiv.org/abs/1909.10351
(authors' code: https://github.com/huawei-noah/Pretrained-Language-Model/tree/master/TinyBERT)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.layer_maps import expand_pairs, layer_map
from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.losses.functional import as_tokens, feature, head_scores, shape_of, token_mask
from kdforge.models.adapters import Projector
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


def expand_attention_pairs(spec: Any) -> list[tuple[str, str, str, str]]:
    """`attention_pairs` as (student_q, student_k, teacher_q, teacher_k) tap names.

    Accepts explicit 4-lists, or a layer-map spec {map, student: [[q, k], ...], teacher: [[q, k], ...]}."""
    if isinstance(spec, Mapping):
        if set(spec) - {"map", "student", "teacher"} or "student" not in spec or "teacher" not in spec:
            raise ValueError("TinyBERTLoss: an attention layer-map spec has the keys map, student and teacher, each "
                             f"side a list of [query_tap, key_tap]; got keys {sorted(spec)}.")
        sides = []
        for side in ("student", "teacher"):
            items = spec[side]
            if isinstance(items, str) or not isinstance(items, Sequence) or not all(
                    not isinstance(i, str) and isinstance(i, Sequence) and len(i) == 2 for i in items):
                raise ValueError(f"TinyBERTLoss: 'attention_pairs.{side}' must be a list of [query_tap, key_tap]; "
                                 f"got {items!r}.")
            sides.append(items)
        try:
            index_pairs = layer_map(len(sides[0]), len(sides[1]), spec.get("map", "uniform"))
        except ValueError as exc:
            raise ValueError(f"TinyBERTLoss: attention_pairs: {exc}") from exc
        return [(*sides[0][i], *sides[1][j]) for i, j in index_pairs]
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not spec:
        raise ValueError(f"TinyBERTLoss: attention_pairs must be a non-empty list of [student_q, student_k, "
                         f"teacher_q, teacher_k] or a layer-map spec; got {spec!r}.")
    out = []
    for item in spec:
        if isinstance(item, str) or not isinstance(item, Sequence) or len(item) != 4 \
                or not all(isinstance(n, str) for n in item):
            raise ValueError("TinyBERTLoss: each attention pair is [student_q, student_k, teacher_q, teacher_k] "
                             f"(four tap names); got {item!r}.")
        out.append(tuple(item))
    return out


@LOSSES.register(
    "tinybert",
    example={"hidden_pairs": [("feat", "feat")], "attention_pairs": [("feat", "feat", "feat", "feat")], "heads": 2},
    paper="Jiao et al. 2020, https://arxiv.org/abs/1909.10351",
    summary="TinyBERT transformer-layer distillation: MSE of (projected) embedding/hidden states and of "
            "attention score matrices, with a layer map",
    nonzero_at_match="the learned projection W_h starts random, so equal student and teacher hidden states "
                     "still differ after projection until it is trained (projector: none gives zero)",
)
class TinyBERTLoss(DistillLoss):
    """TinyBERT's embedding-layer and transformer-layer distillation (its stage 1; stage 2 adds `kd` on the
    logits through a term window, see docs/encoders.md).

    loss = sum over hidden pairs of MSE(h_s W_h, h_t) + sum over attention pairs of MSE(A_s, A_t), with
    A = Q_h K_hᵀ / sqrt(d) per head (the attention scores before the softmax, Eq. 1 and 3), both models split
    into `heads` heads. The embedding-layer loss (Eq. 4) is a hidden pair whose taps are the embedding outputs
    (`embeddings` in a BertModel). Following the authors' code, scores at padded positions (`Targets.mask`
    False) are set to 0 in both models rather than -10000, one projection W_h is shared by all hidden pairs
    (their `fit_dense`; the paper's separate W_e is folded into it) and per-layer MSEs are summed.

    The attention scores are rebuilt from the query and key projections (taps on `...attention.self.query` and
    `.key`, (B, T, D)) because not every attention implementation returns them. TinyBERT compares heads one
    to one, so both models need the same number of heads; a width not divisible by `heads` is an error. Use
    `minilm` with relation heads for students with another head count.

    Progressive transfer (a recipe's `progressive_steps`): stage k is the k-th student layer, i.e. its hidden
    pair and its attention pair. The attention pairs line up with the last hidden pairs, so with one more
    hidden pair than attention pairs (TinyBERT's embedding-output pair first) the embeddings are stage 0
    alone; equal counts pair them one to one. Other counts are refused, since which hidden pair goes with
    which attention pair would be a guess.

    Args:
        hidden_pairs: (student_tap, teacher_tap) hidden-state (and embedding-output) pairs, or a layer-map
            spec (TinyBERT: `map: uniform`); may be empty if attention_pairs is given.
        attention_pairs: [student_q, student_k, teacher_q, teacher_k] tap names per layer pair, or a layer-map
            spec {map, student: [[q, k], ...], teacher: [[q, k], ...]}; may be empty.
        heads: Attention heads of both models (12 for BERT-base and TinyBERT).
        projector: 'linear' (the paper's W_h, needed when widths differ) or 'none'.

    Example:
        >>> import torch
        >>> loss = TinyBERTLoss(hidden_pairs=[("h", "h")], attention_pairs=[("q", "k", "q", "k")], heads=2)
        >>> s = Outputs(features={n: torch.randn(2, 5, 8) for n in "hqk"})
        >>> t = Outputs(features={n: torch.randn(2, 5, 16) for n in "hqk"})
        >>> loss(s, t, Targets()).shape
        torch.Size([])
    """

    def __init__(self, hidden_pairs: list | dict | None = None, attention_pairs: list | dict | None = None,
                 heads: int = 12, projector: str = "linear") -> None:
        super().__init__()
        if not hidden_pairs and not attention_pairs:
            raise ValueError("TinyBERTLoss needs hidden_pairs, attention_pairs or both; got neither.")
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"The 'heads' parameter of TinyBERTLoss must be an integer >= 1. Got {heads!r}.")
        if projector not in ("none", "linear"):
            raise ValueError(
                f"The 'projector' parameter of TinyBERTLoss must be 'none' or 'linear'. Got {projector!r}.")
        self.hidden_pairs = expand_pairs(hidden_pairs, "TinyBERTLoss (hidden_pairs)") if hidden_pairs else []
        self.attention_pairs = expand_attention_pairs(attention_pairs) if attention_pairs else []
        self.heads = heads
        self.projector = projector
        self.proj = Projector("linear") if projector == "linear" and self.hidden_pairs else None
        self.active: tuple[list[int], list[int]] | None = None  # one stage's pairs (progressive)

    def required_taps(self) -> tuple[set[str], set[str]]:
        s = {p[0] for p in self.hidden_pairs} | {n for p in self.attention_pairs for n in p[:2]}
        t = {p[1] for p in self.hidden_pairs} | {n for p in self.attention_pairs for n in p[2:]}
        return s, t

    def _stage_pairs(self) -> list[tuple[list[int], list[int]]]:
        """(hidden pair indices, attention pair indices) of each progressive stage, bottom layer first."""
        n_hidden, n_attention = len(self.hidden_pairs), len(self.attention_pairs)
        if not n_attention:
            return [([i], []) for i in range(n_hidden)]
        if not n_hidden:
            return [([], [j]) for j in range(n_attention)]
        offset = n_hidden - n_attention
        if offset not in (0, 1):
            raise ValueError(
                f"TinyBERTLoss: progressive transfer trains one student layer (its hidden and attention pair) per "
                f"stage, so it needs as many hidden pairs as attention pairs, or one more (the embedding output); "
                f"got {n_hidden} hidden and {n_attention} attention pairs. Tap the same student layers for both.")
        return [([i], [i - offset] if i >= offset else []) for i in range(n_hidden)]

    def layer_stages(self) -> list[set[str]]:
        return [{self.hidden_pairs[i][0] for i in hidden} | {n for j in attention for n in self.attention_pairs[j][:2]}
                for hidden, attention in self._stage_pairs()]

    def set_stage(self, stage: int | None) -> None:
        if stage is None:
            self.active = None
            return
        stages = self._stage_pairs()
        if not 0 <= stage < len(stages):
            raise ValueError(f"TinyBERTLoss: stage {stage} is out of range for {len(stages)} stages.")
        self.active = stages[stage]

    def check_models(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Attention scores are compared head by head, so `heads` must be each model's attention head count (the
        tensors alone cannot tell: any divisor of the width splits them)."""
        if not self.attention_pairs:
            return
        for side, model in (("student", student), ("teacher", teacher)):
            count = getattr(getattr(model, "config", None), "num_attention_heads", None)
            if isinstance(count, int) and count != self.heads:
                raise ValueError(f"heads is {self.heads} but the {side} has {count} attention heads; TinyBERT "
                                 f"compares attention maps head by head: set heads: {count}, and give both models "
                                 "the same head count.")

    def _scores(self, outputs: Outputs, q: str, k: str, side: str, mask: Tensor | None) -> Tensor:
        scores = head_scores(as_tokens(feature(outputs, q, side, "tinybert")),
                             as_tokens(feature(outputs, k, side, "tinybert")), self.heads,
                             f"tinybert {side} attention ({q!r}, {k!r})")
        if mask is not None:
            keep = mask[:, None, :, None] & mask[:, None, None, :]  # (B, 1, T, T): real query and key
            scores = scores.masked_fill(~keep, 0.0)
        return scores

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        hidden, attention = self.hidden_pairs, self.attention_pairs
        if self.active is not None:
            hidden, attention = [hidden[i] for i in self.active[0]], [attention[j] for j in self.active[1]]
        terms = []
        for s_name, t_name in hidden:
            h_s = as_tokens(feature(student, s_name, "student", "tinybert"))
            h_t = as_tokens(feature(teacher, t_name, "teacher", "tinybert"))
            if self.proj is not None:
                h_s = self.proj(h_s, like=h_t)
            check_same_shape(h_s, h_t, what=f"tinybert hidden pair ({s_name!r}, {t_name!r})",
                             hint="Use projector: linear for models of different widths.")
            terms.append(F.mse_loss(h_s, h_t))
        for s_q, s_k, t_q, t_k in attention:
            ref = as_tokens(feature(student, s_q, "student", "tinybert"))
            mask = token_mask(targets, ref)
            a_s = self._scores(student, s_q, s_k, "student", mask)
            a_t = self._scores(teacher, t_q, t_k, "teacher", mask)
            check_same_shape(a_s, a_t, what=f"tinybert attention scores {shape_of(a_s)} vs {shape_of(a_t)}",
                             hint="Both models must see the same tokens.")
            terms.append(F.mse_loss(a_s, a_t))
        return torch.stack(terms).sum()
