"""Is the teacher's position t aligned with label t? An off-by-one between teacher and labels is silent:
token-level KD still trains, towards the distribution of the wrong token.

kdforge shifts labels once, in one place (`kdforge.lm.rows.lm_rows`: labels[t] is the token after position t),
and no loss shifts again, so position t's logits of both models are compared with each other and with labels[t].
A teacher whose logits come shifted (a wrapper that drops the first position, a cache built from inputs with
an extra BOS) breaks that. The preflight batch tells: how often the teacher's argmax at position t equals
labels[t + s] for s = -1, 0, +1. A teacher that predicts anything fits s = 0 best; when a shifted alignment fits
clearly better, the logits are shifted and `alignment_problem` says so. `check_alignment` (preflight) refuses a
teacher one position ahead (+1: nothing but a shift explains it) and warns about one behind (-1: the same
signature as a model that copies its input token, which an untrained model with tied embeddings does).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.losses.sparse import TopK
from kdforge.types import IGNORE_INDEX

MIN_TOKENS = 16  # fewer counted tokens on the batch: too few to tell
MIN_SHIFTED_ACCURACY = 0.3  # a shifted fit must be this good (an untrained teacher fits nothing)


def argmax_tokens(logits: Tensor | TopK) -> Tensor:
    """(B, T) the teacher's most likely token at each position, from logits or a top-k record."""
    if isinstance(logits, TopK):
        return logits.indices.gather(-1, logits.values.argmax(-1, keepdim=True)).squeeze(-1)
    return logits.argmax(-1)


def shift_accuracy(predicted: Tensor, labels: Tensor, shift: int) -> tuple[float, int]:
    """(fraction, count) of counted positions t where predicted[t] == labels[t + shift]."""
    width = labels.shape[1]
    if abs(shift) >= width:
        return 0.0, 0
    pred = predicted[:, max(0, -shift): width - max(0, shift)]
    target = labels[:, max(0, shift): width - max(0, -shift)]
    counted = target != IGNORE_INDEX
    n = int(counted.sum())
    return (float((pred == target)[counted].float().mean()) if n else 0.0), n


def alignment_problem(teacher_logits: Tensor | TopK | None, labels: Tensor | None,
                      where: str = "teacher") -> tuple[int, str] | None:
    """(shift, message) when the teacher's logits fit the labels better shifted by one position, else None.
    Only (B, T, V) logits (or a TopK) with (B, T) labels are checked."""
    if not isinstance(teacher_logits, (Tensor, TopK)) or labels is None or labels.dim() != 2:
        return None  # no logits, another cache format, or not a sequence
    lead = teacher_logits.values.shape[:-1] if isinstance(teacher_logits, TopK) else teacher_logits.shape[:-1]
    if tuple(lead) != tuple(labels.shape):
        return None
    with torch.no_grad():
        predicted = argmax_tokens(teacher_logits).to(labels.device)
        scores = {shift: shift_accuracy(predicted, labels, shift) for shift in (-1, 0, 1)}
    aligned, n = scores[0]
    shift, (best, _) = max(((s, scores[s]) for s in (-1, 1)), key=lambda item: item[1][0])
    if n < MIN_TOKENS or best < MIN_SHIFTED_ACCURACY or best < max(2 * aligned, aligned + 0.2):
        return None
    direction = "one position later (labels[t+1])" if shift > 0 else "one position earlier (labels[t-1])"
    message = (f"{where}: the teacher's logits at position t predict the token {direction}: its argmax matches "
               f"the labels {best:.0%} of the time shifted by {shift:+d} against {aligned:.0%} aligned ({n} tokens "
               "of the preflight batch), so its positions are shifted. kdforge's rows already pair position t with "
               "the next token (labels shifted once, in kdforge.lm.rows); give the teacher the same input_ids as "
               "the student, do not shift its logits or the labels again, and rebuild a teacher cache made from "
               "shifted inputs.")
    if shift < 0:
        message += " (Or the teacher copies its input token, as an untrained model with tied embeddings does.)"
    return shift, message


def check_alignment(teacher_logits: Tensor | TopK | None, labels: Tensor | None, where: str = "teacher") -> None:
    """Raise ShapeMismatchError for a teacher one position ahead of the labels; warn for one behind."""
    found = alignment_problem(teacher_logits, labels, where)
    if found is None:
        return
    shift, message = found
    if shift > 0:
        raise ShapeMismatchError(message)
    warnings.warn(message, stacklevel=2)
