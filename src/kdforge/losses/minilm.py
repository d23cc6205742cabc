"""Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained
Transformers", NeurIPS 2020; Wang et al., "MiniLMv2: Multi-Head Self-Attention Relation Distillation for
Compressing Pretrained Transformers", Findings of ACL 2021.

https://arxiv.org/abs/2002.10957, https://arxiv.org/abs/2012.15828
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.losses.functional import as_tokens, feature, head_scores, shape_of, token_mask
from kdforge.registry import LOSSES

ROLES = ("q", "k", "v")
_MASKED = -1e4  # a masked key's score: exp() underflows to exactly 0 in float32, and differences stay finite


def relation_log_probs(x: Tensor, y: Tensor, heads: int, mask: Tensor | None, what: str) -> Tensor:
    """log softmax over keys of x_h y_hᵀ / sqrt(d) per head: (B, T, D) x2 -> (B, heads, T, T); padded keys
    (mask False) get probability 0."""
    scores = head_scores(x, y, heads, what)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], _MASKED)
    return F.log_softmax(scores, dim=-1)


@LOSSES.register(
    "minilm",
    example={"student": {"q": "feat", "k": "feat", "v": "feat"}, "teacher": {"q": "feat", "k": "feat", "v": "feat"},
             "relations": ["qk", "vv"], "heads": 2},
    paper="Wang et al. 2020, https://arxiv.org/abs/2002.10957; Wang et al. 2021, https://arxiv.org/abs/2012.15828",
    summary="MiniLM / MiniLMv2: KL between teacher and student self-attention distributions and "
            "query/key/value self-relations (relation heads), one teacher layer to the student's last",
)
class MiniLMLoss(DistillLoss):
    """Self-attention (relation) distillation from one teacher layer into the student's last layer.

    For each relation "ab" (a, b in q, k, v), both models' tap tensors A, B (B, T, D) are split into `heads`
    heads of width d = D / heads and R = softmax(A_h B_hᵀ / sqrt(d)) over keys (padded keys, where
    `Targets.mask` is False, get probability 0). loss = sum over relations of the mean over samples, heads and
    real query tokens of KL(R_teacher || R_student).

    - MiniLM (v1): relations ["qk", "vv"] with `heads` = the models' attention heads (qk is the attention
      distribution itself, vv the value relation). Both models must have that many heads.
    - MiniLMv2: relations ["qq", "kk", "vv"] with `heads` = relation heads (48 for base-size teachers in the
      paper), which need only divide both widths, so the student may have any number of attention heads.

    The taps are the query, key and value projections of the chosen layers, e.g. for a BERT student's last
    layer `encoder.layer.3.attention.self.query` / `.key` / `.value` (nn.Linear outputs, (B, T, D)); this works
    with every attention implementation (eager, SDPA, flash), which do not all return attention weights.
    The paper takes the teacher's last layer for base-size teachers and an upper-middle one for large ones.

    Args:
        student: {"q": tap, "k": tap, "v": tap}: the student's projections (only the roles used are needed).
        teacher: the same for the teacher layer.
        relations: Two-letter relation names from q, k, v: ["qk", "vv"] (v1) or ["qq", "kk", "vv"] (v2).
        heads: Attention heads (v1) or relation heads (v2); must divide both models' widths.

    Example:
        >>> import torch
        >>> taps = {"q": "q", "k": "k", "v": "v"}
        >>> loss = MiniLMLoss(student=taps, teacher=taps, relations=["qq", "kk", "vv"], heads=4)
        >>> s = Outputs(features={r: torch.randn(2, 5, 16) for r in "qkv"})
        >>> t = Outputs(features={r: torch.randn(2, 5, 32) for r in "qkv"})
        >>> loss(s, t, Targets()).shape
        torch.Size([])
    """

    def __init__(self, student: dict[str, str], teacher: dict[str, str], relations: Sequence[str] = ("qk", "vv"),
                 heads: int = 12) -> None:
        super().__init__()
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise ValueError(f"The 'heads' parameter of MiniLMLoss must be an integer >= 1. Got {heads!r}.")
        if isinstance(relations, str) or not relations:
            raise ValueError(
                f"MiniLMLoss: relations must be a non-empty list such as ['qk', 'vv']; got {relations!r}.")
        relations = [str(r) for r in relations]
        bad = [r for r in relations if len(r) != 2 or any(c not in ROLES for c in r)]
        if bad:
            raise ValueError(f"MiniLMLoss: relations {bad} are not two letters from q, k, v (e.g. 'qk', 'vv').")
        needed = sorted({c for r in relations for c in r})
        for taps, side in ((student, "student"), (teacher, "teacher")):
            if not isinstance(taps, Mapping):
                raise ValueError(f"MiniLMLoss: '{side}' maps roles to tap names, e.g. {{q: sq, k: sk, v: sv}}.")
            missing = [c for c in needed if c not in taps]
            unknown = sorted(set(taps) - set(ROLES))
            if missing or unknown:
                raise ValueError(f"MiniLMLoss: '{side}' needs taps for roles {needed} (from q, k, v); "
                                 f"missing {missing}, unknown {unknown}.")
        self.student_taps = {c: student[c] for c in needed}
        self.teacher_taps = {c: teacher[c] for c in needed}
        self.relations = relations
        self.heads = heads

    def required_taps(self) -> tuple[set[str], set[str]]:
        return set(self.student_taps.values()), set(self.teacher_taps.values())

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        s = {c: as_tokens(feature(student, tap, "student", "minilm")) for c, tap in self.student_taps.items()}
        t = {c: as_tokens(feature(teacher, tap, "teacher", "minilm")) for c, tap in self.teacher_taps.items()}
        any_s, any_t = next(iter(s.values())), next(iter(t.values()))
        if any_s.shape[:2] != any_t.shape[:2]:
            raise ShapeMismatchError(
                f"minilm: student {shape_of(any_s)} and teacher {shape_of(any_t)} states cover different tokens; "
                "both models must see the same tokenised batch.")
        mask = token_mask(targets, any_s)
        terms = []
        for rel in self.relations:
            a, b = rel
            log_s = relation_log_probs(s[a], s[b], self.heads, mask, f"minilm student relation {rel!r}")
            log_t = relation_log_probs(t[a], t[b], self.heads, mask, f"minilm teacher relation {rel!r}")
            kl = (log_t.exp() * (log_t - log_s)).sum(dim=-1)  # (B, H, T): KL per query token
            if mask is None:
                terms.append(kl.mean())
            else:
                rows = mask[:, None, :].expand_as(kl)
                terms.append((kl * rows).sum() / rows.sum().clamp(min=1))
        return torch.stack(terms).sum()
