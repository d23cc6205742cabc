"""Task metrics against ground-truth labels."""

from __future__ import annotations

from torch import Tensor

from kdforge.types import IGNORE_INDEX


def accuracy(labels: Tensor, logits: Tensor) -> tuple[int, int]:
    """(correct, counted) top-1 predictions; rows labelled -100 are not counted. Shapes (N,) and (N, K)."""
    keep = labels != IGNORE_INDEX
    correct = (logits.argmax(dim=-1)[keep] == labels[keep]).sum()
    return int(correct), int(keep.sum())


def token_nll(labels: Tensor, logits: Tensor) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, counted tokens) of next-token labels under (..., V) logits;
    labels -100 are not counted. Sum these over batches, then `perplexity(total_nll, total_tokens)`."""
    import torch.nn.functional as F

    flat_labels = labels.reshape(-1)
    keep = flat_labels != IGNORE_INDEX
    if not bool(keep.any()):
        return 0.0, 0
    logp = F.log_softmax(logits.reshape(-1, logits.shape[-1])[keep].double(), dim=-1)
    return float(-logp.gather(-1, flat_labels[keep].unsqueeze(-1)).sum()), int(keep.sum())


def perplexity(total_nll: float, tokens: int) -> float:
    """exp(mean negative log-likelihood per token): the effective number of equally likely next tokens."""
    import math

    if tokens <= 0:
        raise ValueError("perplexity: no counted tokens (every label is -100); evaluate on non-empty text.")
    return math.exp(total_nll / tokens)


def bits_per_byte(total_nll: float, total_bytes: int) -> float:
    """Summed next-token negative log-likelihood (nats, `token_nll`) in bits per UTF-8 byte of the text the
    tokens cover. Unlike perplexity it does not depend on how the text was cut into tokens, so models with
    different tokenizers (a teacher and its cross-tokenizer student) compare on the same held-out text."""
    import math

    if total_bytes <= 0:
        raise ValueError("bits_per_byte: the text covers no bytes; evaluate on non-empty text.")
    return total_nll / math.log(2) / total_bytes
