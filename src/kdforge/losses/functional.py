"""Pure helpers shared by two or more feature and relation losses (tap lookup, flattening, distances)."""

from __future__ import annotations

import torch
from torch import Tensor

from kdforge.errors import UnknownNameError
from kdforge.losses.base import Outputs


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
