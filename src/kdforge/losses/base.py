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
    tokens: Tensor | None = None  # (B, T) the real tokens (the batch's attention_mask), for token-level features


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

    def layer_stages(self) -> list[set[str]]:
        """The student taps each stage of progressive layer-wise transfer trains, bottom layer first.

        Empty for losses without layer pairs: a recipe's `progressive_steps` is refused for them.
        """
        return []

    def set_stage(self, stage: int | None) -> None:
        """Count only stage `stage`'s layer pairs (progressive transfer), or all of them (None)."""
        if stage is not None:
            raise ValueError(f"{type(self).__name__} has no layer pairs to train one stage at a time.")

    def check_models(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Checks that need the models, not their tensors (an attention head count); preflight runs them before
        training. Raise ValueError with the fix; the default checks nothing."""

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        raise NotImplementedError


class PairedFeatureLoss(DistillLoss):
    """A loss over (student_tap, teacher_tap) pairs of captured features; `self.pairs` says what it reads.

    Subclasses loop over `active_pairs()`, not `self.pairs`, so a progressive schedule (`set_stage`) can
    restrict the loss to one pair; the value is then that pair's term alone (losses average over pairs).
    """

    pairs: list[tuple[str, str]]
    stage: int | None = None  # set by WeightedSum before each call when the term is progressive

    def required_taps(self) -> tuple[set[str], set[str]]:
        return {s for s, _ in self.pairs}, {t for _, t in self.pairs}

    def layer_stages(self) -> list[set[str]]:
        return [{s} for s, _ in self.pairs]

    def set_stage(self, stage: int | None) -> None:
        if stage is not None and not 0 <= stage < len(self.pairs):
            raise ValueError(f"{type(self).__name__}: stage {stage} is out of range for {len(self.pairs)} pairs.")
        self.stage = stage

    def active_pairs(self) -> list[tuple[int, tuple[str, str]]]:
        """(index into `pairs`, pair) for the pairs that count now: all of them, or the current stage's one."""
        pairs = list(enumerate(self.pairs))
        return pairs if self.stage is None else [pairs[self.stage]]


class WeightedSum(nn.Module):
    """Sum of weighted loss terms; returns every active term for logging, as `{"loss": total, name: value}`.

    A term may be active only in a window of optimizer steps `[start, stop)` (FitNets' hint stage, then KD):
    the loop calls `set_step` before each step, and inactive terms are not computed at all.

    A term with `progressive` steps N (MobileBERT's progressive knowledge transfer, Sun et al. 2020) trains its
    layer stages one at a time from its start step: stage k alone during steps [start + kN, start + (k+1)N),
    then all stages together. The schedule is a function of the step only, so a resumed run continues it;
    `progressive_taps` tells the training side which student layers to hold still.
    """

    def __init__(self, terms: dict[str, DistillLoss], weights: dict[str, float],
                 windows: dict[str, tuple[int, int | None]] | None = None,
                 progressive: dict[str, int] | None = None) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum needs at least one loss term.")
        if set(terms) != set(weights):
            raise ValueError(f"WeightedSum: terms {sorted(terms)} and weights {sorted(weights)} name different terms.")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.windows = {name: (windows or {}).get(name, (0, None)) for name in terms}
        self.progressive = {name: n for name, n in (progressive or {}).items() if n is not None}
        self.stages: dict[str, list[set[str]]] = {}
        for name, n in self.progressive.items():
            if name not in terms:
                raise ValueError(f"WeightedSum: progressive term {name!r} is not one of the terms {sorted(terms)}.")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"WeightedSum: progressive steps of {name!r} must be an integer >= 1; got {n!r}.")
            self.stages[name] = terms[name].layer_stages()
            if not self.stages[name]:
                raise ValueError(f"{type(terms[name]).__name__} has no layer pairs to train one at a time.")
        self.step = 0
        self.every_term = False

    def set_step(self, step: int) -> None:
        self.step = step

    def stage(self, name: str) -> int | None:
        """The stage a progressive term trains alone at the current step; None: every pair counts."""
        n = self.progressive.get(name)
        if n is None or self.every_term:
            return None
        k = (self.step - self.windows[name][0]) // n
        return k if 0 <= k < len(self.stages[name]) and self.active(name) else None

    def progressive_taps(self) -> tuple[set[str], set[str]]:
        """(frozen, training) student taps now: the layers below each progressive term's current stage, and
        that stage's own layers (a module tapped by both trains)."""
        frozen: set[str] = set()
        training: set[str] = set()
        for name in self.progressive:
            k = self.stage(name)
            if k is not None:
                frozen |= set().union(*self.stages[name][:k])
                training |= self.stages[name][k]
        return frozen, training

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
        for name in self.progressive:
            self.terms[name].set_stage(self.stage(name))
        values = {name: term(student, teacher, targets) for name, term in self.terms.items() if self.active(name)}
        if not values:
            raise ValueError(f"No loss term is active at step {self.step}; check the terms' start_step/stop_step.")
        total = torch.stack([self.weights[name] * value for name, value in values.items()]).sum()
        return {"loss": total, **values}
