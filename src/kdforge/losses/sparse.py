"""A teacher given as top-k logits, and the full distribution rebuilt from them (for LM losses).

For a large output space (a language model's vocabulary of V = 32k+ tokens) a cached teacher keeps, for each
position, the k largest logits (values, in float16/bfloat16) with their indices, and the log-sum-exp of the
full logits (float32): a `TopK` (`kdforge.cache.topk.compress_topk` makes one). From those, the teacher's
distribution at temperature 1 is known exactly on the top-k entries, and the total probability of the other
V - k entries (the tail mass m) is known too. The math is here, with the losses that read it, so a loss needs
nothing from the cache package.

The full distribution is then approximated in one of two ways (`tail=`):

* ``"uniform"`` (default): the top-k probabilities are exact and the tail mass m is spread evenly over the
  V - k other entries. In logit form: every missing logit is replaced by the log-mean-exp of the true tail
  logits, ``fill = log((exp(lse) - sum_i exp(v_i)) / (V - k))``.
* ``"renormalize"``: the tail is dropped and the top-k probabilities are rescaled to sum to 1
  (``p_i / (1 - m)``); missing logits become a very negative finite number (probability 0, no NaN).

Error: at temperature 1 the total-variation distance between the rebuilt and the true distribution is at
most m in both modes (uniform: the tail is only redistributed; renormalize: exactly m). At temperature T the
same rebuilt logits are divided by T. With ``"uniform"`` the tail is then a little heavier than the truth for
T > 1 (power-mean inequality) and a little lighter for T < 1; the top-k entries' relative sizes stay exact.
Where `lse` was not stored, only ``"renormalize"`` is possible. With k >= V nothing is lost.

`sparse_kl` computes T²·KL(rebuilt teacher || student) without materialising the dense teacher tensor,
for language models where (tokens x V) tensors are the memory bottleneck; it equals
`kd.soft_kl(student, reconstruct_logits(...), T)` to float precision (a test checks this against float64).

Training from a top-k cache hands the losses a `TopK` (its `tail` set from the cache's settings) instead of
dense logits. Only forward KL reads it, through `sparse_kl` (`kd`; `token_kd` with forward_kl, jsd beta=0 or
skew_kl alpha=0). `topk_refusal` says why a loss term cannot (every other loss that reads teacher logits, and
the options of those two the sparse path cannot honour); the application refuses such a recipe at preflight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Tail = Literal["uniform", "renormalize"]
_DROPPED = 1e9  # renormalize: missing logits sit this far below the largest one (exp underflows to 0)


@dataclass
class TopK:
    """The k largest logits of each row (..., k), their indices (..., k), and the full log-sum-exp (...)."""

    values: Tensor
    indices: Tensor
    logsumexp: Tensor | None
    vocab_size: int
    tail: Tail | None = None  # how the source says to rebuild the tail (a cache's setting); None: the reader's


def _fill_logit(values: Tensor, lse: Tensor | None, vocab_size: int, tail: Tail) -> Tensor:
    """(..., 1) the logit every missing entry gets."""
    k = values.shape[-1]
    vmin = values.min(dim=-1, keepdim=True).values
    if tail == "renormalize" or k >= vocab_size:
        return values.max(dim=-1, keepdim=True).values - _DROPPED
    if lse is None:
        raise ValueError("tail='uniform' needs the stored log-sum-exp of the full logits; use tail='renormalize'.")
    covered = torch.logsumexp(values, dim=-1, keepdim=True) - lse.unsqueeze(-1)  # log(1 - m), <= 0
    log_tail = lse.unsqueeze(-1) + torch.log1p(-covered.clamp(max=-1e-7).exp())  # log(m * Z)
    fill = log_tail - math.log(vocab_size - k)
    # float16 rounding can make the stored top-k look like more than all the mass; the tail's mean logit
    # can never exceed the smallest top-k logit, and must stay finite
    return torch.minimum(fill, vmin).clamp(min=vmin - 60.0)


def reconstruct_logits(topk: TopK, tail: Tail = "uniform") -> Tensor:
    """Dense (..., V) float32 logits whose softmax is the rebuilt teacher distribution (see module doc)."""
    values = topk.values.float()
    fill = _fill_logit(values, topk.logsumexp, topk.vocab_size, tail)
    out = fill.expand(*values.shape[:-1], topk.vocab_size).clone()
    return out.scatter_(-1, topk.indices.long(), values)


def reconstruct_log_probs(topk: TopK, temperature: float = 1.0, tail: Tail = "uniform") -> Tensor:
    """Dense (..., V) log-probabilities of the rebuilt teacher distribution at `temperature`."""
    return F.log_softmax(reconstruct_logits(topk, tail) / temperature, dim=-1)


def sparse_kl(student_logits: Tensor, topk: TopK, temperature: float = 1.0, tail: Tail = "uniform",
              mask: Tensor | None = None) -> Tensor:
    """T²·KL(rebuilt teacher || student) averaged over rows, from top-k entries without a dense teacher.

    student_logits: (..., V); topk: values/indices (..., k); mask: (...) bool, rows that count.
    """
    kl = sparse_kl_rows(student_logits, topk, temperature, tail, mask)
    return kl.sum() / max(len(kl), 1) * temperature**2


def sparse_kl_rows(student_logits: Tensor, topk: TopK, temperature: float = 1.0, tail: Tail = "uniform",
                   mask: Tensor | None = None) -> Tensor:
    """(N,) KL(rebuilt teacher || student) of each counted row at `temperature` (no T² factor)."""
    vocab = student_logits.shape[-1]
    if vocab != topk.vocab_size:
        raise ValueError(f"sparse_kl: the student has {vocab} outputs but the cached teacher {topk.vocab_size}.")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float32, or float64 when given
    s = F.log_softmax(student_logits.to(dtype).flatten(0, -2) / temperature, dim=-1)  # (N, V)
    values = topk.values.to(dtype).flatten(0, -2)
    indices = topk.indices.long().flatten(0, -2)
    lse = topk.logsumexp.flatten() if topk.logsumexp is not None else None
    if mask is not None:
        keep = mask.flatten().bool()
        s, values, indices = s[keep], values[keep], indices[keep]
        lse = lse[keep] if lse is not None else None
    k = values.shape[-1]
    v = values / temperature
    s_top = s.gather(-1, indices)
    if tail == "renormalize" or k >= vocab:
        logp_top = F.log_softmax(v, dim=-1)
        kl = (logp_top.exp() * (logp_top - s_top)).sum(-1)
    else:
        fill = _fill_logit(values, lse, vocab, tail) / temperature  # (N, 1)
        n_tail = vocab - k
        norm = torch.logsumexp(torch.cat([v, fill + math.log(n_tail)], dim=-1), dim=-1, keepdim=True)
        logp_top, logp_tail = v - norm, (fill - norm).squeeze(-1)
        s_tail_sum = s.sum(-1) - s_top.sum(-1)
        kl = (logp_top.exp() * (logp_top - s_top)).sum(-1) + logp_tail.exp() * (n_tail * logp_tail - s_tail_sum)
    return kl


def topk_refusal(term: object, kind: str = "topk") -> str | None:
    """Why loss `term` cannot train from a sparse teacher cache of format `kind` ("topk", or "sampled" /
    "topk_tail" of `kdforge.losses.sampled`) without a dense rebuild, or None when it can (it reads no teacher
    logits, or reads the sparse signal itself). A loss says so with `sparse_refusal(kind)`; losses of features
    alone (pairs of taps) and losses without a teacher read no logits."""
    from kdforge.losses.base import PairedFeatureLoss

    own = getattr(term, "sparse_refusal", None)
    if own is not None:
        return own(kind)
    if not getattr(term, "needs_teacher", True) or isinstance(term, PairedFeatureLoss):
        return None
    return (f"{type(term).__name__} reads the teacher's dense logits, and only forward KL (kd, token_kd) reads "
            f"a {kind} cache sparsely")
