"""Span-level KL across tokenizers, and GOLD's hybrid of KL on shared tokens with ULD on the rest.

At the last token of every aligned span (`kdforge.lm.align`) the teacher and the student both predict the start
of the same next piece of text, each over its own vocabulary. Many tokens are the same string in both
vocabularies ("Ġthe" in byte-level BPE and "▁the" in Unigram are both " the" once the space markers are
normalised): a vocabulary mapping built from these exact string matches (`vocab_map`) lets the two
distributions be compared entry by entry on the shared part.

span_kl (p = teacher, q = student, both softmax(logits / T); M = the mapped teacher ids, m(j) the student id
of teacher token j):

    p̂_j = p_j / sum_{i in M} p_i,   q̂_j = q_m(j) / sum_{i in M} q_m(i)     (j in M)
    span_kl = T² · KL(p̂ || q̂)       the next-token distributions given that the next token is a shared one

The share of the teacher's mass that maps (sum_{j in M} p_j, `mapped_mass`) is what the comparison covers: the
method evaluation reports it on the test split (not per training step: a softmax over the whole teacher
vocabulary at every span end, for a number nobody reads there).

span_hybrid, as TRL's GOLD trainer (Patiño et al. 2025, https://huggingface.co/docs/trl/main/en/gold_trainer):
the mapped part by KL as above, the unmapped part by ULD (`kdforge.losses.uld`: L1 between the sorted unmapped
probabilities, zero-padded), weighted by the share of the teacher vocabulary that maps (GOLD's default) or a
given `mapped_weight` w:

    span_hybrid = w · span_kl + (1 - w) · sum_i | sort(q_unmapped)_i - sort(p_unmapped)_i |

The mapping comes with the data (`data.args.teacher_tokenizer`: the build step hands it to the loss), or is
given in Python: `SpanKLLoss(vocab_map=kdforge.lm.align.vocab_map(student_tokenizer, teacher_tokenizer))`.
(B, V) logits over one vocabulary (rows already paired, no mapping given) share every token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.losses.uld import aligned_logits, cross_tokenizer_sparse_refusal, sorted_l1, span_end_positions
from kdforge.registry import LOSSES
from kdforge.validation import check_positive, check_probability


def evaluate_mapped_mass(loss, student, teacher, test, inputs, taps) -> dict | None:
    """After training: the share of the teacher's next-token mass that maps to the student's vocabulary at the
    aligned span ends of the test split (the `evaluate=` hook of span_kl and span_hybrid)."""
    from kdforge.lm.cross_data import TEACHER_KEYS
    from kdforge.models.forward import logits_of

    if teacher is None or loss.vocab_map is None or "teacher_span" not in test.tensors:
        return None
    was_training = teacher.training
    teacher.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, len(test), 64):
                batch = test[slice(start, start + 64)]
                t_logits = logits_of(teacher(input_ids=batch[TEACHER_KEYS["input_ids"]],
                                             attention_mask=batch[TEACHER_KEYS["attention_mask"]]))
                targets = Targets(labels=batch.get("labels"), mask=batch.get("mask"), batch=batch)
                _, ends = span_end_positions(targets, batch["student_span"].shape, t_logits.shape[:2], "span_kl")
                mass = loss.mapped_mass(t_logits.flatten(0, 1)[ends])
                total, count = total + float(mass.sum()), count + len(mass)
    finally:
        teacher.train(was_training)
    return {"mapped_teacher_mass": total / max(count, 1), "positions": count,
            "mapped_teacher_tokens": int((loss.vocab_map >= 0).sum()), "teacher_vocab": len(loss.vocab_map)}


class _MappedLoss(DistillLoss):
    """What span_kl and span_hybrid share: the vocabulary mapping and the KL on its mapped part."""

    name = "span_kl"

    def __init__(self, temperature: float, vocab_map: Tensor | list[int] | None) -> None:
        super().__init__()
        check_positive(temperature, "temperature", type(self).__name__)
        self.temperature = temperature
        self.vocab_map: Tensor | None = None
        if vocab_map is not None:
            self.set_vocab_map(vocab_map)

    def sparse_refusal(self, kind: str) -> str:
        """Always a reason: the mapped KL reads the teacher's whole distribution (`cross_tokenizer_sparse_refusal`)."""
        return cross_tokenizer_sparse_refusal(kind)

    def set_vocab_map(self, mapping: Tensor | list[int]) -> None:
        """Use `mapping` ((teacher vocabulary,) student ids, -1 unmapped; `kdforge.lm.align.vocab_map`)."""
        mapping = torch.as_tensor(mapping, dtype=torch.long)
        if mapping.dim() != 1 or not bool((mapping >= 0).any()):
            raise ValueError(f"{type(self).__name__}: vocab_map must be a 1-D tensor of student ids (-1: unmapped) "
                             "with at least one mapped token; the two vocabularies share no token.")
        self.vocab_map = mapping

    def _mapping(self, s: Tensor, t: Tensor, rows: bool) -> tuple[Tensor, Tensor]:
        if self.vocab_map is None and rows and s.shape[-1] == t.shape[-1]:
            every = torch.arange(t.shape[-1], device=t.device)  # (B, V) rows over one vocabulary: all shared
            return every, every
        if self.vocab_map is None:
            raise ShapeMismatchError(
                f"{self.name}: no vocabulary mapping. Pair the rows with a teacher tokenizer "
                "(data.args.teacher_tokenizer: the mapping comes with the data) or pass vocab_map=vocab_map(student "
                "tokenizer, teacher tokenizer) in Python.")
        mapping = self.vocab_map.to(t.device)
        if len(mapping) != t.shape[-1] or int(mapping.max()) >= s.shape[-1]:
            raise ShapeMismatchError(
                f"{self.name}: the vocabulary mapping covers {len(mapping)} teacher and up to "
                f"{int(mapping.max()) + 1} student tokens but the logits have {t.shape[-1]} and {s.shape[-1]}; "
                "build the mapping from these models' tokenizers (each model's vocab_size equal to its tokenizer's).")
        teacher_ids = (mapping >= 0).nonzero().flatten()
        return teacher_ids, mapping[teacher_ids]

    def mapped_mass(self, t: Tensor) -> Tensor:
        """(n,) share of each teacher distribution (at temperature T) on tokens the student has too."""
        mapping = self.vocab_map.to(t.device)
        p = F.softmax(t.double() / self.temperature, dim=-1)
        return p[:, mapping >= 0].sum(-1)

    def _mapped_kl(self, s: Tensor, t: Tensor, teacher_ids: Tensor, student_ids: Tensor) -> Tensor:
        """(n,) KL(p̂ || q̂) on the mapped tokens, both renormalised there."""
        log_p = F.log_softmax(t[:, teacher_ids] / self.temperature, dim=-1)
        log_q = F.log_softmax(s[:, student_ids] / self.temperature, dim=-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    def _aligned(self, student: Outputs, teacher: Outputs, targets: Targets):
        s, t = aligned_logits(student, teacher, targets, self.name)
        dtype = torch.promote_types(s.dtype, torch.float32)
        s, t = s.to(dtype), t.to(dtype)
        return s, t, self._mapping(s, t, rows=student.logits.dim() == 2)


@LOSSES.register(
    "span_kl",
    example={"temperature": 1.0},
    paper="span-level KL across tokenizers through exact-match vocabulary mapping (cf. Boizard et al. 2024, "
          "https://arxiv.org/abs/2402.12030; TRL GOLD)",
    summary="cross-tokenizer KD: KL at aligned span ends on the tokens both vocabularies spell the same",
    evaluate=evaluate_mapped_mass,
)
class SpanKLLoss(_MappedLoss):
    """T² · KL(p̂ || q̂) on the mapped vocabulary at every aligned span end, averaged (module docstring).

    Args:
        temperature: T > 0; divides both models' logits; the value is multiplied by T².
        vocab_map: (teacher vocabulary,) student ids, -1 unmapped (`kdforge.lm.align.vocab_map`); None: the
            build step sets it from the data.

    Example:
        >>> import torch
        >>> batch = {"student_span": torch.tensor([[-1, 0, 1, 1]]), "teacher_span": torch.tensor([[0, 0, 1, -1]])}
        >>> loss = SpanKLLoss(vocab_map=torch.tensor([0, 2, -1, 1, 4]))
        >>> s, t = Outputs(logits=torch.randn(1, 4, 6)), Outputs(logits=torch.randn(1, 4, 5))
        >>> loss(s, t, Targets(batch=batch)).shape
        torch.Size([])
    """

    name = "span_kl"

    def __init__(self, temperature: float = 1.0, vocab_map: Tensor | list[int] | None = None) -> None:
        super().__init__(temperature, vocab_map)

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        s, t, (teacher_ids, student_ids) = self._aligned(student, teacher, targets)
        if s.shape[0] == 0:
            return student.logits.sum() * 0.0
        return self._mapped_kl(s, t, teacher_ids, student_ids).mean() * self.temperature**2


@LOSSES.register(
    "span_hybrid",
    example={"temperature": 1.0, "mapped_weight": 0.5},
    paper="TRL GOLD (Patiño et al. 2025), https://huggingface.co/docs/trl/main/en/gold_trainer; "
          "ULD: Boizard et al. 2024, https://arxiv.org/abs/2402.12030",
    summary="cross-tokenizer KD as GOLD: KL on the mapped vocabulary + ULD on the unmapped rest, at aligned spans",
    evaluate=evaluate_mapped_mass,
)
class SpanHybridLoss(_MappedLoss):
    """w · span_kl + (1 - w) · ULD on the unmapped tokens, at every aligned span end, averaged (module docstring).

    Args:
        temperature: T > 0; divides both models' logits (the KL part is multiplied by T²).
        mapped_weight: w in [0, 1]; None (GOLD's default): the share of the teacher vocabulary that maps.
        vocab_map: (teacher vocabulary,) student ids, -1 unmapped (`kdforge.lm.align.vocab_map`); None: the
            build step sets it from the data.

    Example:
        >>> import torch
        >>> batch = {"student_span": torch.tensor([[-1, 0, 1, 1]]), "teacher_span": torch.tensor([[0, 0, 1, -1]])}
        >>> loss = SpanHybridLoss(vocab_map=torch.tensor([0, 2, -1, 1, 4]))
        >>> s, t = Outputs(logits=torch.randn(1, 4, 6)), Outputs(logits=torch.randn(1, 4, 5))
        >>> loss(s, t, Targets(batch=batch)).shape
        torch.Size([])
    """

    name = "span_hybrid"

    def __init__(self, temperature: float = 1.0, mapped_weight: float | None = None,
                 vocab_map: Tensor | list[int] | None = None) -> None:
        super().__init__(temperature, vocab_map)
        if mapped_weight is not None:
            check_probability(mapped_weight, "mapped_weight", "SpanHybridLoss")
        self.mapped_weight = mapped_weight

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        s, t, (teacher_ids, student_ids) = self._aligned(student, teacher, targets)
        if s.shape[0] == 0:
            return student.logits.sum() * 0.0
        w = self.mapped_weight if self.mapped_weight is not None else len(teacher_ids) / t.shape[-1]
        kl = self._mapped_kl(s, t, teacher_ids, student_ids) * self.temperature**2
        t_rest = torch.ones(t.shape[-1], dtype=torch.bool, device=t.device)
        t_rest[teacher_ids] = False
        s_rest = torch.ones(s.shape[-1], dtype=torch.bool, device=s.device)
        s_rest[student_ids] = False
        q = F.softmax(s / self.temperature, dim=-1)[:, s_rest]
        p = F.softmax(t / self.temperature, dim=-1)[:, t_rest]
        return (w * kl + (1.0 - w) * sorted_l1(q, p)).mean()
