"""Pure helpers shared by two or more feature and relation losses (tap lookup, flattening, distances)."""

from __future__ import annotations

import torch
from torch import Tensor

from kdforge.errors import ShapeMismatchError, UnknownNameError
from kdforge.losses.base import Outputs, Targets


def feature(outputs: Outputs, tap: str, side: str, owner: str) -> Tensor:
    """`outputs.features[tap]`, or an error that says which tap is missing and what was captured."""
    try:
        return outputs.features[tap]
    except KeyError:
        have = ", ".join(sorted(outputs.features)) or "none"
        raise UnknownNameError(
            f"{owner}: the {side} has no captured feature {tap!r} (captured: {have}). "
            f"Declare it under taps.{side} in the recipe as {tap}: module.path."
        ) from None


def shape_of(tensor: Tensor) -> str:
    """'(B, 64, 8, 8)': a feature shape with the batch dimension written as B."""
    return "(" + ", ".join(["B", *(str(d) for d in tensor.shape[1:])]) + ")"


def flat(tensor: Tensor) -> Tensor:
    """(B, ...) -> (B, D): one vector per sample (relation losses compare samples, not positions)."""
    return tensor.flatten(1)


def pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """(B, D) -> (B, B) Euclidean distances; zero on the diagonal, and finite gradients there.

    The squared distance is clamped at eps before the square root (as in Park et al.'s code) so the gradient
    of sqrt at 0 never appears; the diagonal is then zeroed by a mask, not in place.
    """
    squared = x.pow(2).sum(dim=1)  # (B,)
    d2 = (squared.unsqueeze(0) + squared.unsqueeze(1) - 2 * x @ x.t()).clamp(min=eps)  # (B, B)
    off_diagonal = 1.0 - torch.eye(x.shape[0], device=x.device, dtype=x.dtype)
    return d2.sqrt() * off_diagonal


def as_tokens(x: Tensor) -> Tensor:
    """A feature as a sequence of token vectors: (B, T, D) as is; (B, C, H, W) -> (B, H*W, C) (a conv map's
    positions read as tokens, as a vision transformer would); (B, D) -> (B, 1, D)."""
    if x.dim() == 3:
        return x
    if x.dim() == 4:
        return x.flatten(2).transpose(1, 2)
    if x.dim() == 2:
        return x.unsqueeze(1)
    raise ShapeMismatchError(f"expected token states (B, T, D), (B, C, H, W) or (B, D); got {shape_of(x)}.")


def token_mask(targets: Targets, x: Tensor) -> Tensor | None:
    """The real tokens of `x` (B, T, D) as a (B, T) bool mask, for losses over hidden states and attention:
    `Targets.tokens` (the attention mask) when it fits, else `Targets.mask`, else None (all count).

    The attention mask comes first: `mask` may mark only the positions a label loss counts (the 15 % of masked-LM
    tokens), while hidden-state and attention losses compare every real token (DistilBERT, TinyBERT, MiniLM)."""
    for mask in (targets.tokens, targets.mask):
        if mask is not None and mask.dim() == 2 and mask.shape == x.shape[:2]:
            return mask.bool()
    return None


def head_scores(a: Tensor, b: Tensor, heads: int, what: str) -> Tensor:
    """Scaled dot products per head: (B, T, D), (B, T, D) -> (B, heads, T, T) = a_h b_hᵀ / sqrt(D / heads).

    Self-attention scores (a = queries, b = keys) and MiniLM's self-relations (a = b = values) both use this."""
    if a.shape != b.shape:
        raise ShapeMismatchError(f"{what}: the two tensors differ in shape, {shape_of(a)} vs {shape_of(b)}.")
    batch, tokens, width = a.shape
    if width % heads:
        raise ShapeMismatchError(
            f"{what}: width {width} is not divisible by heads={heads} (a head-count mismatch). Give the number of "
            "attention heads of this model, or a number of relation heads that divides both models' widths."
        )
    d = width // heads
    a_h = a.reshape(batch, tokens, heads, d).transpose(1, 2)  # (B, H, T, d)
    b_h = b.reshape(batch, tokens, heads, d).transpose(1, 2)
    return a_h @ b_h.transpose(-1, -2) / d**0.5
