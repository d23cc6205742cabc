"""Sparse teacher signals other than top-k logits, and the forward-KL losses that read them.

Two signals a teacher cache can hold per position (`kdforge.cache.formats` encodes them):

* `Sampled`: the random-sampling KD of Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge
  Distillation in LLMs", ACL 2025 (https://arxiv.org/abs/2503.16870). N tokens x_1..x_N are drawn from a
  proposal q (the teacher's distribution p at a proposal temperature tau: q ∝ p^(1/tau)); the store keeps the
  unique ids with their counts c_j and, when tau != 1, the importance ratio log(p(x_j)/q(x_j)). The loss is
  the importance-sampling estimate of the cross-entropy minus the teacher's entropy H(p) (stored exactly):

      KL_hat = -sum_j (c_j / N) · (p(x_j) / q(x_j)) · log s(x_j)  -  H(p)

  Its expectation over the draws is KL(p || s) exactly, and so is that of its gradient with respect to the
  student's logits z: sum_j w_j (s - e_{x_j}), whose mean is s - p (sum_j E[w_j e_{x_j}] = p). The paper's
  estimate normalises the weights (self-normalised importance sampling); with tau = 1 every ratio is 1 and the
  two coincide (the weights c_j / N already sum to 1). For tau != 1 this module keeps the plain, unbiased
  weights. With 12 samples per position the paper matches dense KD at a fraction of its storage.

* `TopKTail`: the k largest teacher log-probabilities, their ids and the exact log of the tail mass
  m = 1 - sum_top p. The loss treats the tail as one more bucket (a "ghost token") and computes the KL between
  the two (k+1)-bucket distributions exactly: teacher (p_1..p_k, m) against student (s_1..s_k, 1 - sum_top s).
  It never invents a shape for the teacher's tail; its gradient on a tail entry is s_j - m · s_j / S_tail, i.e.
  the tail keeps the student's own shape, scaled to the teacher's mass.

Both are signals of the teacher at temperature 1, so both losses refuse another temperature (a cache cannot
tell the teacher's distribution at T from them). Neither ever builds a dense teacher tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Sampled:
    """Per position (leading dims ...): n slots of unique token ids (..., n) with counts (..., n) (0 = an empty
    slot), optional log importance ratios log(p/q) (..., n) (None: the proposal was the teacher itself), the
    teacher's entropy (...) (None: the loss is the cross-entropy estimate, off by the constant H(p)), the
    number of draws N per position and the vocabulary size."""

    indices: Tensor
    counts: Tensor
    log_ratio: Tensor | None
    entropy: Tensor | None
    samples: int
    vocab_size: int

    @property
    def lead_shape(self) -> torch.Size:
        return self.indices.shape[:-1]

    def flat(self) -> Sampled:
        """Leading dims flattened to rows: (N, n)."""
        return Sampled(self.indices.flatten(0, -2), self.counts.flatten(0, -2),
                       None if self.log_ratio is None else self.log_ratio.flatten(0, -2),
                       None if self.entropy is None else self.entropy.flatten(), self.samples, self.vocab_size)

    def select(self, rows: slice | Tensor) -> Sampled:
        """The rows a slice, index or bool tensor names, of a flat signal."""
        return replace(self, indices=self.indices[rows], counts=self.counts[rows],
                       log_ratio=None if self.log_ratio is None else self.log_ratio[rows],
                       entropy=None if self.entropy is None else self.entropy[rows])

    def weights(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """(..., n) importance weights (c_j / N) · p/q in `dtype` (0 on empty slots)."""
        w = self.counts.to(dtype) / self.samples
        return w if self.log_ratio is None else w * self.log_ratio.to(dtype).exp()

    def kl_rows(self, student_logits: Tensor) -> Tensor:
        """(N,) unbiased estimate of KL(p || s) per row of a flat signal (see the module docstring)."""
        _check_vocab(student_logits, self.vocab_size, "sampled")
        s = F.log_softmax(student_logits.float() if student_logits.dtype != torch.float64 else student_logits, -1)
        w = self.weights(s.dtype)
        # an empty slot (count 0, id 0) adds nothing, even where the student's log-probability there is -inf
        picked = s.gather(-1, self.indices.long())
        ce = -torch.where(w > 0, w * picked, torch.zeros_like(picked)).sum(-1)
        return ce if self.entropy is None else ce - self.entropy.to(s.dtype)


@dataclass
class TopKTail:
    """Per position: the k largest teacher log-probabilities (..., k) at temperature 1, their ids (..., k), and
    the log of the exact tail mass (...) (log m; very negative when the top-k hold everything)."""

    log_probs: Tensor
    indices: Tensor
    log_tail: Tensor
    vocab_size: int

    @property
    def lead_shape(self) -> torch.Size:
        return self.indices.shape[:-1]

    def flat(self) -> TopKTail:
        return TopKTail(self.log_probs.flatten(0, -2), self.indices.flatten(0, -2), self.log_tail.flatten(),
                        self.vocab_size)

    def select(self, rows: slice | Tensor) -> TopKTail:
        """The rows a slice, index or bool tensor names, of a flat signal."""
        return TopKTail(self.log_probs[rows], self.indices[rows], self.log_tail[rows], self.vocab_size)

    def kl_rows(self, student_logits: Tensor) -> Tensor:
        """(N,) KL between the teacher's and the student's (k+1)-bucket distributions (top-k ids + the tail)."""
        _check_vocab(student_logits, self.vocab_size, "topk_tail")
        z = student_logits.float() if student_logits.dtype != torch.float64 else student_logits
        lse = torch.logsumexp(z, -1, keepdim=True)
        idx = self.indices.long()
        s_top = z.gather(-1, idx) - lse
        if idx.shape[-1] >= self.vocab_size:  # every id is kept: no tail bucket (its mass is 0 for both)
            t = self.log_probs.to(z.dtype) - torch.logsumexp(self.log_probs.to(z.dtype), -1, keepdim=True)
            return (t.exp() * (t - s_top)).sum(-1)
        s_tail = (torch.logsumexp(z.scatter(-1, idx, float("-inf")), -1, keepdim=True) - lse).squeeze(-1)
        t = torch.cat([self.log_probs.to(z.dtype), self.log_tail.to(z.dtype).unsqueeze(-1)], -1)
        t = t - torch.logsumexp(t, -1, keepdim=True)  # quantised codes: the k+1 buckets sum to 1 again
        s = torch.cat([s_top, s_tail.unsqueeze(-1)], -1)
        p = t.exp()
        # a bucket the teacher gives no mass adds nothing (0 · log 0 = 0), even where the student's is -inf
        return torch.where(p > 0, p * (t - s), torch.zeros_like(p)).sum(-1)

    def dense_logits(self) -> Tensor:
        """(..., V) logits with the top-k exact and the tail mass spread evenly over the other V - k ids: an
        approximation for code that needs dense teacher logits (evaluation of a cache-only recipe)."""
        k = self.indices.shape[-1]
        rest = max(self.vocab_size - k, 1)
        fill = (self.log_tail.float() - torch.log(torch.tensor(float(rest)))).unsqueeze(-1)
        out = fill.expand(*self.log_probs.shape[:-1], self.vocab_size).clone()
        return out.scatter_(-1, self.indices.long(), self.log_probs.float())


SPARSE_SIGNALS = (Sampled, TopKTail)


def _check_vocab(student_logits: Tensor, vocab_size: int, what: str) -> None:
    if student_logits.shape[-1] != vocab_size:
        raise ValueError(f"{what} teacher signal: the student has {student_logits.shape[-1]} outputs but the "
                         f"cached teacher {vocab_size}.")


def signal_kl(student_logits: Tensor, signal: Sampled | TopKTail, temperature: float = 1.0,
              mask: Tensor | None = None) -> Tensor:
    """Forward KL(teacher || student) from a sampled or top-k + tail signal, averaged over the counted rows.

    student_logits: (..., V); the signal's leading dims match; mask: (...) bool, rows that count.
    """
    if temperature != 1.0:
        raise ValueError(temperature_refusal(signal))
    flat = signal.flat()
    s = student_logits.flatten(0, -2)
    if mask is not None:
        keep = mask.flatten().bool()
        s = s[keep]
        flat = flat.select(keep)
    kl = flat.kl_rows(s)
    return kl.sum() / max(len(kl), 1)


def kind_of(signal: object) -> str:
    """The cache format name of a sparse signal."""
    return "sampled" if isinstance(signal, Sampled) else "topk_tail"


def temperature_refusal(signal: object | str) -> str:
    """Why a loss at a temperature other than 1 cannot read this signal."""
    kind = signal if isinstance(signal, str) else kind_of(signal)
    return (f"a {kind} teacher cache holds the teacher's distribution at temperature 1 only, so the loss must "
            "use temperature: 1")


__all__ = ["SPARSE_SIGNALS", "Sampled", "TopKTail", "kind_of", "signal_kl", "temperature_refusal"]
