"""The float64 reference every token-level loss path is checked against (tests/losses/test_parity.py).

Written straight from the formulas, on probabilities, sharing no code with the fast paths (`token_kd`, its
chunked and top-k readings, `fused_token_kd`, `kd`): it is slow and makes every (tokens x vocabulary) tensor,
which is the point. Gradients come from autograd through these plain expressions.

With z the logits, the model's transform is z' = softcap · tanh(scale · z / softcap) (scale first, then the
Gemma-2 soft cap; either may be absent). At temperature T: p = softmax(z'_teacher / T) and
q = softmax(z'_student / T) over the first `vocab_size` entries (all when None: a padded vocabulary is cut to
its real part and renormalised). Per token:

    forward_kl        sum p log(p / q)
    reverse_kl        sum q log(q / p)
    jsd(beta)         beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q;
                      by convention (TRL's generalized_jsd_loss) beta = 0 means forward_kl, beta = 1 reverse_kl
    tv                1/2 sum |p - q|
    skew_kl(alpha)          KL(p || alpha p + (1 - alpha) q)
    skew_reverse_kl(alpha)  KL(q || alpha q + (1 - alpha) p)

loss = T² · (sum over counted tokens of the divergence) / (number of counted tokens); a token counts unless
its mask is False or its label is -100.

A teacher kept as top-k logits stands for the distribution whose k stored entries keep their exact
probability exp(v_i - lse) and whose V - k other entries share the rest evenly ("uniform" tail), or are 0 with
the stored ones rescaled to sum to 1 ("renormalize"); `topk_teacher_logits` writes that distribution's logits
(log-probabilities) so the formulas above apply unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def model_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None = None, softcap: float | None = None,
                 scale: float = 1.0) -> Tensor:
    """(N, V) float64 logits of a linear head: softcap · tanh(scale · (h Wᵀ + b) / softcap)."""
    z = hidden.double() @ weight.double().T
    if bias is not None:
        z = z + bias.double()
    z = z * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return z


def topk_teacher_logits(values: Tensor, indices: Tensor, lse: Tensor | None, vocab_size: int,
                        tail: str = "uniform") -> Tensor:
    """(N, V) log-probabilities of the distribution a top-k record stands for (see the module docstring)."""
    values, lse_known = values.double(), lse is not None
    n = values.shape[0]
    probs = torch.zeros(n, vocab_size, dtype=torch.float64)
    for row in range(n):
        if tail == "renormalize" or not lse_known:
            top = torch.exp(values[row] - values[row].max())
            top = top / top.sum()
            rest = 0.0
        else:
            top = torch.exp(values[row] - lse[row].double())
            rest = max(1.0 - float(top.sum()), 0.0) / (vocab_size - values.shape[1]) if vocab_size > values.shape[1] \
                else 0.0
        probs[row] = rest
        probs[row, indices[row].long()] = top
    return torch.log(probs)  # -inf where a renormalised tail has no mass: p log p is taken as 0 there


def _softmax(z: Tensor, temperature: float) -> Tensor:
    e = torch.exp((z - z.max(dim=-1, keepdim=True).values) / temperature)
    return e / e.sum(dim=-1, keepdim=True)


def _kl(a: Tensor, b: Tensor) -> Tensor:
    """(N,) sum a log(a / b), with 0 log 0 = 0."""
    terms = torch.where(a > 0, a * (torch.log(a.clamp_min(1e-300)) - torch.log(b.clamp_min(1e-300))),
                        torch.zeros_like(a))
    return terms.sum(-1)


def divergence(p: Tensor, q: Tensor, name: str, beta: float = 0.5, alpha: float = 0.1) -> Tensor:
    """(N,) per-token divergence between teacher p and student q, (N, V) probabilities (module docstring)."""
    if name == "forward_kl" or (name == "jsd" and beta == 0.0):
        return _kl(p, q)
    if name == "reverse_kl" or (name == "jsd" and beta == 1.0):
        return _kl(q, p)
    if name == "jsd":
        m = beta * p + (1.0 - beta) * q
        return beta * _kl(p, m) + (1.0 - beta) * _kl(q, m)
    if name == "tv":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "skew_kl":
        return _kl(p, alpha * p + (1.0 - alpha) * q)
    if name == "skew_reverse_kl":
        return _kl(q, alpha * q + (1.0 - alpha) * p)
    raise ValueError(f"reference: unknown divergence {name!r}")


def token_loss(student_logits: Tensor, teacher_logits: Tensor, counted: Tensor, name: str = "forward_kl",
               temperature: float = 1.0, beta: float = 0.5, alpha: float = 0.1,
               vocab_size: int | None = None) -> Tensor:
    """T² · mean over counted tokens of the divergence; logits (N, V_s) and (N, V_t), `counted` (N,) bool."""
    s, t = student_logits.double(), teacher_logits.double()
    if vocab_size is not None:
        s, t = s[:, :vocab_size], t[:, :vocab_size]
    if s.shape != t.shape:
        raise ValueError(f"reference: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
    keep = counted.bool()
    p, q = _softmax(t[keep], temperature), _softmax(s[keep], temperature)
    d = divergence(p, q, name, beta, alpha)
    return d.sum() / max(int(keep.sum()), 1) * temperature**2


def counted_tokens(shape: tuple[int, ...], labels: Tensor | None, mask: Tensor | None,
                   ignore_index: int = -100) -> Tensor:
    """(N,) bool over the flattened positions: mask True (when given) and label != ignore_index (when given)."""
    keep = torch.ones(math.prod(shape), dtype=torch.bool)
    if mask is not None:
        keep &= mask.flatten().bool()
    if labels is not None:
        keep &= labels.flatten() != ignore_index
    return keep
