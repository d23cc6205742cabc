"""Universal Logit Distillation: Boizard et al., "Towards Cross-Tokenizer Distillation: the Universal Logit
Distillation Loss for LLMs", 2024. https://arxiv.org/abs/2402.12030

A teacher and a student with different tokenizers have next-token distributions over different vocabularies,
so no entry-by-entry divergence exists. ULD compares them by optimal transport instead: with the same unit cost
between any two tokens, the Wasserstein-1 distance between the two distributions reduces (the paper's
closed form) to the L1 distance between the probability vectors sorted in decreasing order, the shorter one
padded with zeros to the larger vocabulary:

    ULD(p, q) = sum_i | sort(q)_i - sort(p)_i |        p = softmax(teacher / T), q = softmax(student / T)

It needs no vocabulary mapping: it matches the *shape* of the distribution (how confident, how spread), not
which token gets the mass.

Where the paper pairs positions naively (the i-th student token with the i-th teacher token), kdforge compares
them where both tokenizations agree: at the last token of every aligned span (`kdforge.lm.align`), where both
models predict the start of the same next piece of text. The alignment rides in the batch (`student_span`,
`teacher_span`, from `data.args.teacher_tokenizer`); a position counts when both sides' labels there are real.
The value is averaged over those positions (no T² factor: it is a distance between probabilities, in [0, 2]).
(B, V) logits are rows of one-step distributions already paired one to one (no alignment needed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.registry import LOSSES
from kdforge.types import IGNORE_INDEX
from kdforge.validation import check_positive


def span_end_positions(targets: Targets, student_shape: torch.Size, teacher_shape: torch.Size,
                       name: str) -> tuple[Tensor, Tensor]:
    """Flat indices into the student's (B·Ls) and the teacher's (B·Lt) positions of the last token of every
    aligned span where both sides predict a real next token."""
    from kdforge.lm.cross_data import check_alignment_rows

    batch = targets.batch or {}
    if "student_span" not in batch or "teacher_span" not in batch:
        raise ShapeMismatchError(
            f"{name}: the batch has no token alignment (student_span, teacher_span). Pair the rows with a teacher "
            "tokenizer: data.args.teacher_tokenizer on text:stdlib_lm or text:lm_file, or "
            "kdforge.lm.cross_data.paired_rows.")
    s_span, t_span = batch["student_span"], batch["teacher_span"]
    if tuple(s_span.shape) != tuple(student_shape) or tuple(t_span.shape) != tuple(teacher_shape):
        raise ShapeMismatchError(
            f"{name}: the alignment covers student {tuple(s_span.shape)} / teacher {tuple(t_span.shape)} positions "
            f"but the logits cover {tuple(student_shape)} / {tuple(teacher_shape)}. The teacher must read its own "
            "tokens: teacher.inputs: {input_ids: teacher_input_ids, attention_mask: teacher_attention_mask}.")
    check_alignment_rows(s_span, t_span, where=name)
    rows = s_span.shape[0]
    spans = int(torch.maximum(s_span.max(), t_span.max()).clamp(min=-1)) + 1
    s_last, t_last = _last_token(s_span, spans), _last_token(t_span, spans)
    keep = (s_last >= 0) & (t_last >= 0)
    s_at, t_at = s_last.clamp(min=0), t_last.clamp(min=0)
    if targets.labels is not None:
        keep &= targets.labels.gather(1, s_at) != IGNORE_INDEX
    if targets.mask is not None:
        keep &= targets.mask.bool().gather(1, s_at)
    if "teacher_labels" in batch:
        keep &= batch["teacher_labels"].gather(1, t_at) != IGNORE_INDEX
    b, _ = keep.nonzero(as_tuple=True)
    offsets_s = torch.arange(rows, device=s_span.device) * s_span.shape[1]
    offsets_t = torch.arange(rows, device=t_span.device) * t_span.shape[1]
    return (offsets_s[b] + s_at[keep]), (offsets_t[b] + t_at[keep])


def _last_token(span: Tensor, spans: int) -> Tensor:
    """(B, spans) position of each span's last token on one side, -1 where the side has none."""
    rows, length = span.shape
    index = torch.where(span >= 0, span, spans)
    positions = torch.arange(length, device=span.device).expand(rows, length)
    out = torch.full((rows, spans + 1), -1, dtype=torch.long, device=span.device)
    return out.scatter_reduce(1, index, positions, reduce="amax")[:, :spans]


def aligned_logits(student: Outputs, teacher: Outputs, targets: Targets, name: str) -> tuple[Tensor, Tensor]:
    """(n, Vs) student and (n, Vt) teacher logits at the aligned span ends (`span_end_positions`)."""
    s_logits, t_logits = student.logits, teacher.logits
    if s_logits is None or t_logits is None or not isinstance(t_logits, Tensor):
        raise ShapeMismatchError(f"{name}: dense student and teacher logits are both needed (a top-k teacher cache "
                                 "cannot be compared across vocabularies); run the teacher online.")
    if s_logits.dim() == 2 and t_logits.dim() == 2 and s_logits.shape[0] == t_logits.shape[0]:
        return s_logits, t_logits  # rows of one-step distributions: already paired one to one
    if s_logits.dim() != 3 or t_logits.dim() != 3:
        raise ShapeMismatchError(f"{name}: sequence logits (B, T, V) on both sides (or (B, V) rows paired one to "
                                 f"one) are needed; got student {tuple(s_logits.shape)} and teacher "
                                 f"{tuple(t_logits.shape)}.")
    s_idx, t_idx = span_end_positions(targets, s_logits.shape[:2], t_logits.shape[:2], name)
    return s_logits.flatten(0, 1)[s_idx], t_logits.flatten(0, 1)[t_idx]


def cross_tokenizer_sparse_refusal(kind: str) -> str:
    """Why uld, span_kl and span_hybrid cannot train from a sparse teacher cache of format `kind`: each reads the
    teacher's whole next-token distribution at every aligned span end (ULD sorts all of it; span_kl maps it onto
    the shared tokens), and kd / token_kd, which read sparse caches, need one shared tokenizer."""
    return ("the cross-tokenizer losses (uld, span_kl, span_hybrid) read the teacher's whole next-token "
            f"distribution at every aligned span end, which a {kind} cache does not hold (kd and token_kd, which read "
            "it, need one tokenizer for both models)")


def sorted_l1(q: Tensor, p: Tensor) -> Tensor:
    """(n,) sum_i |sort(q)_i - sort(p)_i|, both sorted in decreasing order, the shorter padded with zeros."""
    width = max(q.shape[-1], p.shape[-1])
    q_sorted = F.pad(q.sort(-1, descending=True).values, (0, width - q.shape[-1]))
    p_sorted = F.pad(p.sort(-1, descending=True).values, (0, width - p.shape[-1]))
    return (q_sorted - p_sorted).abs().sum(-1)


@LOSSES.register(
    "uld",
    example={"temperature": 1.0},
    paper="Boizard et al. 2024, https://arxiv.org/abs/2402.12030",
    summary="Universal Logit Distillation across tokenizers: sorted-probability L1 (Wasserstein-1) at aligned spans",
)
class ULDLoss(DistillLoss):
    """ULD: sum_i |sort(q)_i - sort(p)_i| at the last token of every aligned span, averaged (module docstring).

    Args:
        temperature: T > 0; both models' logits are divided by T before the softmax.

    Example:
        >>> import torch
        >>> span = torch.tensor([[-1, 0, 1, 1, -1]])
        >>> batch = {"student_span": span, "teacher_span": torch.tensor([[-1, 0, 0, 1, -1, -1]])}
        >>> loss = ULDLoss()(Outputs(logits=torch.randn(1, 5, 7)), Outputs(logits=torch.randn(1, 6, 11)),
        ...                  Targets(batch=batch))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        check_positive(temperature, "temperature", "ULDLoss")
        self.temperature = temperature

    def sparse_refusal(self, kind: str) -> str:
        """Always a reason: ULD sorts the teacher's whole distribution (`cross_tokenizer_sparse_refusal`)."""
        return cross_tokenizer_sparse_refusal(kind)

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        s, t = aligned_logits(student, teacher, targets, "uld")
        if s.shape[0] == 0:
            return student.logits.sum() * 0.0  # keeps the graph intact when nothing counts
        dtype = torch.promote_types(s.dtype, torch.float32)
        q = F.softmax(s.to(dtype) / self.temperature, dim=-1)
        p = F.softmax(t.to(dtype) / self.temperature, dim=-1)
        return sorted_l1(q, p).mean()
