"""Calibration: does a model's confidence match how often it is right (or agrees with its teacher)?

Binning follows Guo et al. 2017 (https://arxiv.org/abs/1706.04599): confidence = max softmax probability,
`n_bins` equal-width bins over [0, 1], bin b holding confidences in (b/n_bins, (b+1)/n_bins] (the first bin
also holds 0). ECE = sum over bins of (rows in bin / all rows) * |accuracy in bin - mean confidence in bin|.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.types import IGNORE_INDEX


def _check_bins(n_bins: int, owner: str) -> None:
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"The 'n_bins' parameter of {owner} must be an integer >= 1. Got {n_bins!r} instead.")


def _bin_index(confidence: Tensor, n_bins: int) -> Tensor:
    """Bin of each confidence: ceil(c * n_bins) - 1, clamped to [0, n_bins - 1] (so 0 goes to the first bin)."""
    return (torch.ceil(confidence * n_bins) - 1).long().clamp(0, n_bins - 1)


def binned_hits(confidence: Tensor, hits: Tensor, n_bins: int = 15) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: its edges, row count, mean confidence and hit rate.

    Args:
        confidence: Confidence of each row in [0, 1], shape (N,).
        hits: 1 where the row counts as a success (correct, or agreeing with the teacher), shape (N,).
        n_bins: Number of equal-width bins over [0, 1].

    Returns:
        One dict per bin: `lower`, `upper`, `count`, `confidence` and `accuracy` (both 0.0 for empty bins).
    """
    _check_bins(n_bins, "binned_hits")
    if confidence.shape != hits.shape or confidence.dim() != 1:
        raise ShapeMismatchError(
            f"binned_hits: confidence {tuple(confidence.shape)} and hits {tuple(hits.shape)} must both be (N,)."
        )
    confidence, hits = confidence.double(), hits.double()
    index = _bin_index(confidence, n_bins)
    count = torch.bincount(index, minlength=n_bins).double()
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, confidence)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, hits)
    safe = count.clamp_min(1.0)
    return [
        {"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": int(count[b]),
         "confidence": float(conf_sum[b] / safe[b]), "accuracy": float(hit_sum[b] / safe[b])}
        for b in range(n_bins)
    ]


def _ece_from_bins(bins: list[dict[str, Any]]) -> float:
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def _confidence_and_hits(labels: Tensor, logits: Tensor, owner: str) -> tuple[Tensor, Tensor]:
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ShapeMismatchError(
            f"{owner}: expected labels (N,) and logits (N, K); got {tuple(labels.shape)} and {tuple(logits.shape)}."
        )
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        raise ValueError(f"{owner}: no labelled rows (every label is {IGNORE_INDEX}); calibration needs labels.")
    probs = torch.softmax(logits[keep].double(), dim=-1)
    confidence, predicted = probs.max(dim=-1)
    return confidence, (predicted == labels[keep]).double()


def reliability_bins(labels: Tensor, logits: Tensor, n_bins: int = 15) -> list[dict[str, Any]]:
    """The reliability diagram's data: per confidence bin, mean confidence and accuracy (labels first).

    Rows labelled -100 are skipped. Shapes (N,) and (N, K).
    """
    _check_bins(n_bins, "reliability_bins")
    confidence, hits = _confidence_and_hits(labels, logits, "reliability_bins")
    return binned_hits(confidence, hits, n_bins)


def expected_calibration_error(labels: Tensor, logits: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) of `logits` against true `labels`, in [0, 1].

    Args:
        labels: True class ids, shape (N,); rows labelled -100 are skipped.
        logits: Model logits, shape (N, K).
        n_bins: Number of equal-width confidence bins.

    Returns:
        sum_b |B_b| / N * |acc(B_b) - conf(B_b)|; 0 for a perfectly calibrated model.
    """
    return _ece_from_bins(reliability_bins(labels, logits, n_bins))


def agreement_by_confidence(teacher_logits: Tensor, student_logits: Tensor, n_bins: int = 10) -> list[dict[str, Any]]:
    """Top-1 agreement binned by the teacher's confidence (max softmax probability); shapes (N, K).

    Shows where disagreements live: a student that only departs from the teacher on inputs the teacher
    itself is unsure about is a safer replacement than one that departs on confident inputs.
    """
    if teacher_logits.shape != student_logits.shape or teacher_logits.dim() != 2:
        raise ShapeMismatchError(
            f"agreement_by_confidence: teacher {tuple(teacher_logits.shape)} and student "
            f"{tuple(student_logits.shape)} logits must both be (N, K)."
        )
    confidence = torch.softmax(teacher_logits.double(), dim=-1).max(dim=-1).values
    hits = (teacher_logits.argmax(dim=-1) == student_logits.argmax(dim=-1)).double()
    return binned_hits(confidence, hits, n_bins)
