"""Token-level distillation of a language model's next-token distributions, with a choice of divergence.

Forward KL: Hinton et al. 2015 (https://arxiv.org/abs/1503.02531), applied per token (Kim & Rush 2016's
word-level KD, https://arxiv.org/abs/1606.07947). Reverse KL: MiniLLM, Gu et al. 2024
(https://arxiv.org/abs/2306.08543). Generalised JSD: GKD, Agarwal et al. 2024 (https://arxiv.org/abs/2306.13649),
with TRL's `generalized_jsd_loss` convention for beta. Skew KL: DistiLLM, Ko et al. 2024
(https://arxiv.org/abs/2402.03898). Total variation: Wen et al. 2023, f-divergence KD
(https://arxiv.org/abs/2307.15190).

With p the teacher's and q the student's next-token distribution at temperature T (softmax(z / T)), and
m_b = b·p + (1 - b)·q, the per-token divergences are:

    forward_kl        KL(p || q)                                  mass-covering (standard KD)
    reverse_kl        KL(q || p)                                  mode-seeking
    jsd               beta·KL(p || m_beta) + (1 - beta)·KL(q || m_beta);  beta = 0 is forward_kl and beta = 1
                      is reverse_kl exactly (TRL special-cases both ends the same way); 0.5 is the usual JSD
    tv                1/2 · sum |p - q|
    skew_kl           KL(p || alpha·p + (1 - alpha)·q)            alpha = 0 is forward_kl
    skew_reverse_kl   KL(q || alpha·q + (1 - alpha)·p)            alpha = 0 is reverse_kl

The loss is T² times the divergence, averaged over the tokens that count (as `kd`: the T² keeps gradient
magnitudes comparable across temperatures; with T = 1 it is the plain divergence).

Memory: rows (tokens) are processed `chunk_size` at a time, and each chunk's gradient with respect to the
student logits is computed right away (in the forward pass) into one buffer, so besides the logits
themselves and that gradient only chunk x V temporaries exist: never a full tokens x vocabulary
log-probability tensor. A teacher given as cached top-k logits (`kdforge.losses.sparse.TopK`) is read
sparsely (`sparse_kl_rows`, no teacher tensor of chunk x V) for forward KL; other divergences rebuild it one
chunk at a time with `reconstruct_log_probs` (training from a top-k cache refuses them: `sparse_refusal`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.lm.distillspec import evaluate_draft
from kdforge.losses.base import DistillLoss, Outputs, Targets, counted_rows
from kdforge.losses.sampled import SPARSE_SIGNALS, kind_of, temperature_refusal
from kdforge.losses.sparse import Tail, TopK, reconstruct_log_probs, sparse_kl_rows
from kdforge.registry import LOSSES
from kdforge.validation import check_positive, check_probability

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "tv", "skew_kl", "skew_reverse_kl"]
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "tv", "skew_kl", "skew_reverse_kl")


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """(N,) KL(a || b) from log-probabilities, summed over the last dim."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, a_weight: float) -> Tensor:
    """log(a_weight·a + (1 - a_weight)·b) from log-probabilities, for 0 < a_weight < 1."""
    return torch.logaddexp(log_a + math.log(a_weight), log_b + math.log1p(-a_weight))


def token_divergence(student_log_probs: Tensor, teacher_log_probs: Tensor, divergence: Divergence = "forward_kl",
                     beta: float = 0.5, alpha: float = 0.1) -> Tensor:
    """(N,) per-row divergence between (N, V) log-probabilities (see the module docstring for the formulas)."""
    s, t = student_log_probs, teacher_log_probs
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0.0) or (
            divergence == "skew_kl" and alpha == 0.0):
        return _kl(t, s)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1.0) or (
            divergence == "skew_reverse_kl" and alpha == 0.0):
        return _kl(s, t)
    if divergence == "jsd":
        mix = _log_mix(t, s, beta)
        return beta * _kl(t, mix) + (1.0 - beta) * _kl(s, mix)
    if divergence == "tv":
        return 0.5 * (t.exp() - s.exp()).abs().sum(-1)
    if divergence == "skew_kl":
        return _kl(t, _log_mix(t, s, alpha)) if alpha < 1.0 else s.new_zeros(s.shape[:-1])
    if divergence == "skew_reverse_kl":
        return _kl(s, _log_mix(s, t, alpha)) if alpha < 1.0 else s.new_zeros(s.shape[:-1])
    raise ValueError(f"token_kd: unknown divergence {divergence!r}; use one of {', '.join(DIVERGENCES)}.")


class _ChunkedSum(torch.autograd.Function):
    """sum over chunks [start, stop) of rows(s[start:stop], start, stop), with the gradient w.r.t. s computed
    chunk by chunk during the forward pass into one buffer shaped like s. Peak memory: that buffer (the size
    of the logits' own gradient, which backward needs anyway) plus one chunk's temporaries. The teacher side
    gets no gradient (teacher outputs come without one)."""

    @staticmethod
    def forward(ctx, s: Tensor, rows, bounds: list[tuple[int, int]]) -> Tensor:
        grad = torch.zeros_like(s)
        total = None
        for start, stop in bounds:
            with torch.enable_grad():
                chunk = s[start:stop].detach().requires_grad_(True)
                value = rows(chunk, start, stop)
                (grad[start:stop],) = torch.autograd.grad(value, chunk)
            total = value.detach() if total is None else total + value.detach()
        ctx.grads = (grad,)  # not save_for_backward: backward hands this very buffer on (no copy of V x N)
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return *hand_on(ctx, grad_output, "token_kd"), None, None


def hand_on(ctx, grad_output: Tensor, who: str) -> tuple[Tensor | None, ...]:
    """The gradients a chunked forward pass computed (`ctx.grads`), times `grad_output` in place, handed on once:
    the buffers leave with them, so a second backward through the same value is refused."""
    grads, ctx.grads = ctx.grads, None
    if grads is None:
        raise RuntimeError(f"{who}: backward through the same loss value twice is not supported (the chunked "
                           "gradients are handed on once); recompute the loss.")
    return tuple(None if g is None else g.mul_(grad_output.to(g.dtype)) for g in grads)  # theirs alone now


@LOSSES.register(
    "token_kd",
    example={"divergence": "jsd", "beta": 0.5, "temperature": 2.0, "chunk_size": 3},
    paper="Kim & Rush 2016, https://arxiv.org/abs/1606.07947; Agarwal et al. 2024 (GKD), "
          "https://arxiv.org/abs/2306.13649; Ko et al. 2024 (skew KL), https://arxiv.org/abs/2402.03898",
    summary="token-level KD on next-token distributions: forward/reverse KL, JSD(beta), TV, skew KL; chunked",
    evaluate=evaluate_draft,  # DistillSpec: the student as a speculative-decoding draft
)
class TokenKDLoss(DistillLoss):
    """Token-level KD: T² · D(p_teacher, p_student) per token, averaged over the tokens that count.

    For (B, T, V) logits every position is a token; positions where `Targets.mask` is False or the label is
    -100 (padding, prompt) do not count. (B, K) logits are rows of one-step distributions, so the loss also
    works on classifiers. A batch with no counted token gives 0 with the graph intact.

    Args:
        divergence: forward_kl | reverse_kl | jsd | tv | skew_kl | skew_reverse_kl (formulas: module doc).
        beta: jsd's interpolation in [0, 1] (TRL's convention: 0 = forward KL, 1 = reverse KL, 0.5 = JSD).
        alpha: skew_kl / skew_reverse_kl skew in [0, 1) (DistiLLM uses 0.1; 0 is the plain KL).
        temperature: T > 0; divides both models' logits; the value is multiplied by T².
        chunk_size: Tokens processed at a time (memory: chunk_size x V temporaries plus the logits' gradient).
        vocab_size: Compare only the first `vocab_size` entries of both models' logits: the real vocabulary
            when the embeddings are padded to different sizes over one tokenizer (e.g. 151936 of 152064).
        tail: How a teacher given as cached top-k logits is rebuilt (`kdforge.losses.sparse`).

    Example:
        >>> import torch
        >>> loss = TokenKDLoss(divergence="reverse_kl", chunk_size=4)
        >>> s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
        >>> loss(Outputs(logits=s), Outputs(logits=t), Targets(mask=torch.ones(2, 5, dtype=torch.bool))).shape
        torch.Size([])
    """

    def __init__(self, divergence: Divergence = "forward_kl", beta: float = 0.5, alpha: float = 0.1,
                 temperature: float = 1.0, chunk_size: int = 1024, vocab_size: int | None = None,
                 tail: Tail = "uniform") -> None:
        super().__init__()
        if divergence not in DIVERGENCES:
            raise ValueError(f"The 'divergence' parameter of TokenKDLoss must be one of {', '.join(DIVERGENCES)}. "
                             f"Got {divergence!r} instead.")
        check_probability(beta, "beta", "TokenKDLoss")
        check_probability(alpha, "alpha", "TokenKDLoss")
        if alpha == 1.0:
            raise ValueError("The 'alpha' parameter of TokenKDLoss must be < 1 (alpha = 1 compares a distribution "
                             "with itself: always 0). Got 1.0 instead.")
        check_positive(temperature, "temperature", "TokenKDLoss")
        if not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise ValueError(f"The 'chunk_size' parameter of TokenKDLoss must be an integer >= 1. Got {chunk_size!r}.")
        if vocab_size is not None and not (isinstance(vocab_size, int) and vocab_size >= 1):
            raise ValueError(f"The 'vocab_size' parameter of TokenKDLoss must be an integer >= 1 or null. "
                             f"Got {vocab_size!r}.")
        if tail not in ("uniform", "renormalize"):
            raise ValueError(f"The 'tail' parameter of TokenKDLoss must be 'uniform' or 'renormalize'. Got {tail!r}.")
        self.divergence, self.beta, self.alpha = divergence, beta, alpha
        self.temperature, self.chunk_size, self.vocab_size, self.tail = temperature, chunk_size, vocab_size, tail

    def _forward_kl(self) -> bool:
        d = self.divergence
        return d == "forward_kl" or (d == "jsd" and self.beta == 0.0) or (d == "skew_kl" and self.alpha == 0.0)

    def sparse_refusal(self, kind: str) -> str | None:
        """Why training from a `kind` cache ("topk", "sampled", "topk_tail") cannot honour this term, or None."""
        if not self._forward_kl():
            return (f"token_kd divergence={self.divergence!r} needs the teacher's probability of every token; "
                    f"a {kind} cache is read sparsely by forward_kl only")
        if self.vocab_size is not None:
            return (f"token_kd vocab_size renormalises the teacher over part of the vocabulary, which a {kind} "
                    "cache cannot")
        return None if kind == "topk" or self.temperature == 1.0 else temperature_refusal(kind)

    def _rows(self, student: Tensor, teacher: Tensor | TopK, start: int, stop: int, weight: Tensor) -> Tensor:
        """Sum over rows [start, stop) of weight · divergence (float32 or wider); `student` is that chunk."""
        return self.chunk_sum(student, teacher_rows(teacher, start, stop), weight)

    def chunk_sum(self, student: Tensor, teacher: Tensor | TopK, weight: Tensor) -> Tensor:
        """Sum over a chunk's rows of weight · divergence (float32 or wider), from the student's (c, V) logits and
        the teacher's rows of the same chunk (logits, or a `TopK`). The fused loss calls it with logits it makes."""
        dtype = torch.promote_types(student.dtype, torch.float32)
        if isinstance(teacher, SPARSE_SIGNALS):  # sampled / top-k + tail (kdforge.losses.sampled)
            reason = self.sparse_refusal(kind_of(teacher))
            if reason is not None:
                raise ValueError(f"{reason}.")
            d = teacher.kl_rows(student.to(dtype))
            return (d * weight.to(d.dtype)).sum()
        v = self.vocab_size  # None: the whole (equal) vocabulary; else only the real, unpadded part
        s = F.log_softmax(student[:, :v].to(dtype) / self.temperature, dim=-1)
        if isinstance(teacher, TopK):
            if v is None and self._forward_kl():
                d = sparse_kl_rows(student.to(dtype), teacher, self.temperature, teacher.tail or self.tail)
                return (d * weight.to(d.dtype)).sum()
            t = reconstruct_log_probs(teacher, self.temperature, teacher.tail or self.tail).to(dtype)
            if v is not None:
                t = F.log_softmax(t[:, :v], dim=-1)  # renormalised over the real vocabulary
        else:
            t = F.log_softmax(teacher[:, :v].to(dtype) / self.temperature, dim=-1)
        d = token_divergence(s, t, self.divergence, self.beta, self.alpha)
        return (d * weight.to(d.dtype)).sum()

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        s_logits, t_logits = student.logits, teacher.logits
        if s_logits is None or t_logits is None:
            raise ShapeMismatchError("token_kd: student and teacher logits are both needed; one is missing (None).")
        s, t = self._aligned(s_logits, t_logits)
        keep = counted_rows(s_logits.shape[:-1], targets, s_logits.device)
        n = int(keep.sum())
        bounds = [(start, min(start + self.chunk_size, s.shape[0])) for start in range(0, s.shape[0], self.chunk_size)
                  if bool(keep[start:start + self.chunk_size].any())]

        def rows(chunk: Tensor, start: int, stop: int) -> Tensor:
            return self._rows(chunk, t, start, stop, keep[start:stop])

        if not bounds:
            return s.sum() * 0.0  # keeps the graph (and DDP's gradient sync) intact when nothing counts
        if torch.is_grad_enabled() and s.requires_grad:
            total = _ChunkedSum.apply(s, rows, bounds)
        else:
            total = sum(rows(s[start:stop], start, stop) for start, stop in bounds)
        return total / max(n, 1) * self.temperature**2

    def _aligned(self, s_logits: Tensor, t_logits: Tensor | TopK) -> tuple[Tensor, Tensor | TopK]:
        """Both sides as (N, V) rows (the teacher possibly as a flattened TopK), checked for the same vocabulary."""
        s = s_logits.flatten(0, -2)
        if isinstance(t_logits, SPARSE_SIGNALS):
            lead, t_vocab, t = t_logits.lead_shape, t_logits.vocab_size, t_logits.flat()
        elif isinstance(t_logits, TopK):
            lead, t_vocab = t_logits.values.shape[:-1], t_logits.vocab_size
            t: Tensor | TopK = TopK(t_logits.values.flatten(0, -2), t_logits.indices.flatten(0, -2),
                                    None if t_logits.logsumexp is None else t_logits.logsumexp.flatten(),
                                    t_vocab, t_logits.tail)
        else:
            lead, t_vocab = t_logits.shape[:-1], t_logits.shape[-1]
            t = t_logits.flatten(0, -2)
        if lead != s_logits.shape[:-1]:
            raise ShapeMismatchError(
                f"token_kd: the student's logits cover positions {tuple(s_logits.shape[:-1])} but the teacher's "
                f"{tuple(lead)}. Feed both models the same input_ids.")
        self.compared_vocab(s_logits.shape[-1], t_vocab, "token_kd")
        return s, t

    def compared_vocab(self, s_vocab: int, t_vocab: int, who: str) -> int:
        """The vocabulary both sides are compared on: `vocab_size` (the real part of padded ones), else the one
        both have; a mismatch raises `ShapeMismatchError` naming `who`."""
        if self.vocab_size is not None:
            if self.vocab_size > min(s_vocab, t_vocab):
                raise ShapeMismatchError(
                    f"{who}: vocab_size={self.vocab_size} is larger than the student's ({s_vocab}) or the "
                    f"teacher's ({t_vocab}) vocabulary; set it to the real (unpadded) vocabulary size.")
            return self.vocab_size
        if s_vocab != t_vocab:
            raise ShapeMismatchError(vocab_mismatch_message(s_vocab, t_vocab, who))
        return s_vocab


def teacher_rows(teacher: Tensor | TopK, start: int | Tensor, stop: int | None = None) -> Tensor | TopK:
    """Rows [start, stop) of the teacher's (N, V) logits or (N, k) `TopK`, or the rows a (c,) index tensor
    `start` names (then `stop` is None); the `TopK` keeps its tail."""
    rows = start if stop is None else slice(start, stop)
    if isinstance(teacher, SPARSE_SIGNALS):
        return teacher.select(rows)
    if isinstance(teacher, TopK):
        return TopK(teacher.values[rows], teacher.indices[rows],
                    None if teacher.logsumexp is None else teacher.logsumexp[rows], teacher.vocab_size, teacher.tail)
    return teacher[rows]


def vocab_mismatch_message(student_vocab: int, teacher_vocab: int, where: str) -> str:
    """The error for token-level KD between models with different vocabulary sizes."""
    return (
        f"{where}: the student's vocabulary has {student_vocab} entries but the teacher's {teacher_vocab}. "
        "Token-level KD compares next-token distributions entry by entry, so both models must share one "
        "vocabulary. If both use one tokenizer and only the embedding matrices are padded, set vocab_size: "
        f"{min(student_vocab, teacher_vocab)} (the real vocabulary) on the token_kd term. Different tokenizers: "
        "pair the rows (data.args.teacher_tokenizer; the teacher reads teacher_input_ids through an inputs "
        "mapping) and use a cross-tokenizer loss, uld, span_kl or span_hybrid (docs/llm.md#distilling-across-"
        "tokenizers), or sequence-level KD (kdforge.llm.seq_kd: train on teacher-generated text)."
    )
