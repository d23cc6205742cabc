"""Task metrics against ground-truth labels."""

from __future__ import annotations

from torch import Tensor

from kdforge.losses.base import IGNORE_INDEX


def accuracy(labels: Tensor, logits: Tensor) -> tuple[int, int]:
    """(correct, counted) top-1 predictions; rows labelled -100 are not counted. Shapes (N,) and (N, K)."""
    keep = labels != IGNORE_INDEX
    correct = (logits.argmax(dim=-1)[keep] == labels[keep]).sum()
    return int(correct), int(keep.sum())
