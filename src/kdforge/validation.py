"""Shared checks and message templates, so every error reads the same way: where, what, how to fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import Tensor

from kdforge.errors import ShapeMismatchError, UnknownNameError


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """' Did you mean 'x'?' for the closest candidates, or '' when none is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


def unknown_name(kind: str, name: str, candidates: Iterable[str], where: str = "", hint: str = "") -> UnknownNameError:
    """Build (not raise) the standard 'unknown <kind>' error listing close matches and all known names."""
    known = sorted(candidates)
    prefix = f"{where}: " if where else ""
    listing = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + f", ... ({len(known)} in all)"
    msg = f"{prefix}unknown {kind} {name!r}.{did_you_mean(name, known)} Known: {listing}."
    if hint:
        msg += f" {hint}"
    return UnknownNameError(msg)


def shape_str(tensor: Tensor) -> str:
    return "(" + ", ".join(str(d) for d in tensor.shape) + ")"


def check_same_shape(a: Tensor | None, b: Tensor | None, what: str, hint: str = "") -> None:
    """Raise ShapeMismatchError naming `what` when two tensors differ in shape (or one is missing)."""
    if a is None or b is None:
        missing = "first" if a is None else "second"
        raise ShapeMismatchError(f"{what}: the {missing} tensor is missing (None).{' ' + hint if hint else ''}")
    if a.shape != b.shape:
        msg = f"{what}: shapes differ, {shape_str(a)} vs {shape_str(b)}."
        if hint:
            msg += f" {hint}"
        raise ShapeMismatchError(msg)


def check_positive(value: float, name: str, owner: str) -> float:
    """`value > 0`, written so NaN is rejected too."""
    if not value > 0:
        raise ValueError(f"The {name!r} parameter of {owner} must be > 0. Got {value!r} instead.")
    return value


def check_probability(value: float, name: str, owner: str) -> float:
    """0 <= value <= 1 (NaN rejected)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"The {name!r} parameter of {owner} must be in [0, 1]. Got {value!r} instead.")
    return value
