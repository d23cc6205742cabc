"""The loss contract: what a loss sees (`Outputs`, `Targets`) and how recipe terms combine (`WeightedSum`).

A loss never sees models, hooks, YAML or devices: only the tensors one batch produced. That keeps every
method a pure function of tensors, testable on hand-built values, and usable from a cached teacher.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

IGNORE_INDEX = -100  # label of an unlabelled sample or a masked token, as in torch's cross_entropy


@dataclass
class Outputs:
    """What one model produced for one batch."""

    logits: Tensor | None = None  # (B, K) classification; (B, T, V) language models
    features: dict[str, Tensor] = field(default_factory=dict)  # tap name -> captured tensor
    views: list[Tensor] = field(default_factory=list)  # logits of extra stochastic passes (dropout views)


@dataclass
class Targets:
    """The supervision side of a batch, in the form losses need it."""

    labels: Tensor | None = None  # (B,) or (B, T) class ids; IGNORE_INDEX marks unlabelled entries
    mask: Tensor | None = None  # (B,) or (B, T) bool: the positions that count (padding is False)
    index: Tensor | None = None  # (B,) stable sample ids (memory banks, teacher caches)


class DistillLoss(nn.Module):
    """A distillation objective: tensors in, scalar out. Knows nothing about hooks, YAML or devices.

    Subclasses validate their arguments in `__init__` and implement `forward`. Trainable parts (projectors,
    embeddings) are submodules and memory banks are buffers, so optimizers and checkpoints see them.
    """

    #: Does the loss need the teacher at all? Plain `ce` does not, so a scratch run can skip it.
    needs_teacher: bool = True
    #: Extra stochastic forward passes of the student the loss reads from `Outputs.views` (SD-Dropout: 1).
    student_views: int = 0

    def required_taps(self) -> tuple[set[str], set[str]]:
        """Feature names read from (student, teacher); preflight checks they are captured."""
        return set(), set()

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        raise NotImplementedError


class PairedFeatureLoss(DistillLoss):
    """A loss over (student_tap, teacher_tap) pairs of captured features; `self.pairs` says what it reads."""

    pairs: list[tuple[str, str]]

    def required_taps(self) -> tuple[set[str], set[str]]:
        return {s for s, _ in self.pairs}, {t for _, t in self.pairs}


class WeightedSum(nn.Module):
    """Sum of weighted loss terms; returns every active term for logging, as `{"loss": total, name: value}`.

    A term may be active only in a window of optimizer steps `[start, stop)` (FitNets' hint stage, then KD):
    the loop calls `set_step` before each step, and inactive terms are not computed at all.
    """

    def __init__(self, terms: dict[str, DistillLoss], weights: dict[str, float],
                 windows: dict[str, tuple[int, int | None]] | None = None) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum needs at least one loss term.")
        if set(terms) != set(weights):
            raise ValueError(f"WeightedSum: terms {sorted(terms)} and weights {sorted(weights)} name different terms.")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.windows = {name: (windows or {}).get(name, (0, None)) for name in terms}
        self.step = 0
        self.every_term = False

    def set_step(self, step: int) -> None:
        self.step = step

    def active(self, name: str) -> bool:
        start, stop = self.windows[name]
        return self.every_term or (self.step >= start and (stop is None or self.step < stop))

    @contextmanager
    def all_terms(self) -> Iterator[None]:
        """Every term active regardless of its window (preflight checks terms that start later too)."""
        self.every_term = True
        try:
            yield
        finally:
            self.every_term = False

    @property
    def needs_teacher(self) -> bool:
        return any(term.needs_teacher for term in self.terms.values())

    @property
    def student_views(self) -> int:
        return max((term.student_views for name, term in self.terms.items() if self.active(name)), default=0)

    def required_taps(self) -> tuple[set[str], set[str]]:
        student_taps: set[str] = set()
        teacher_taps: set[str] = set()
        for term in self.terms.values():
            s, t = term.required_taps()
            student_taps |= s
            teacher_taps |= t
        return student_taps, teacher_taps

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> dict[str, Tensor]:
        values = {name: term(student, teacher, targets) for name, term in self.terms.items() if self.active(name)}
        if not values:
            raise ValueError(f"No loss term is active at step {self.step}; check the terms' start_step/stop_step.")
        total = torch.stack([self.weights[name] * value for name, value in values.items()]).sum()
        return {"loss": total, **values}
