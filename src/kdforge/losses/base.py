"""The loss contract: what a loss sees (`Outputs`, `Targets`) and how loss terms combine (`WeightedSum`).

A loss never sees models, hooks, YAML or devices: only the tensors one batch produced. That keeps every
method a pure function of tensors, testable on hand-built values, and usable from a cached teacher.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from kdforge.types import IGNORE_INDEX  # also re-exported: losses name it from here


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
    batch: Mapping[str, Tensor] | None = None  # the whole batch: row data some losses read (token alignments)


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

    @contextmanager
    def only_stage(self, stage: int | None) -> Iterator[None]:
        """Count only stage `stage`'s layer pairs during the block, then every pair again (None: every pair)."""
        if stage is None:
            yield
            return
        self.set_stage(stage)
        try:
            yield
        finally:
            self.set_stage(None)

    def check_models(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Checks that need the models, not their tensors (an attention head count); preflight runs them before
        training. Raise ValueError with the fix; the default checks nothing."""

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        raise NotImplementedError


class PairedFeatureLoss(DistillLoss):
    """A loss over (student_tap, teacher_tap) pairs of captured features; `self.pairs` says what it reads.

    Subclasses loop over `active_pairs()`, not `self.pairs`, so a progressive schedule (`only_stage`) can
    restrict the loss to one pair; the value is then that pair's term alone (losses average over pairs).
    """

    pairs: list[tuple[str, str]]
    stage: int | None = None  # one stage's pair alone, only while WeightedSum computes a progressive stage

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
    """Sum of weighted loss terms; returns every computed term for logging, as `{"loss": total, name: value}`.

    By default every term is computed, with all its layer pairs. A schedule (`kdforge.train.schedule`) narrows
    that before each optimizer step with `select`: only the `active` terms are computed (the others cost
    nothing), and a progressive term in `stages` counts only that stage's layer pairs.
    """

    def __init__(self, terms: dict[str, DistillLoss], weights: dict[str, float]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum needs at least one loss term.")
        if set(terms) != set(weights):
            raise ValueError(f"WeightedSum: terms {sorted(terms)} and weights {sorted(weights)} name different terms.")
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        self.active: frozenset[str] | None = None  # the terms computed; None: all of them
        self.stages: dict[str, int] = {}  # progressive term -> the one stage whose pairs count now
        self.step = 0  # the optimizer step the selection is for (messages; GKD's on-policy draw)

    def select(self, active: Collection[str] | None = None, stages: Mapping[str, int] | None = None,
               step: int = 0) -> None:
        """Compute only the terms in `active` (None: every term), each term in `stages` with that stage's layer
        pairs alone, at optimizer step `step`. With no arguments: everything, as preflight checks it."""
        unknown = sorted((set(active or ()) | set(stages or {})) - set(self.terms))
        if unknown:
            raise ValueError(f"WeightedSum: {unknown} are not among the terms {sorted(self.terms)}.")
        self.active = None if active is None else frozenset(active)
        self.stages = dict(stages or {})
        self.step = step

    @contextmanager
    def all_terms(self) -> Iterator[None]:
        """Every term with every pair during the block (preflight checks terms that start later too); the
        selection is put back afterwards."""
        saved = self.active, self.stages, self.step
        self.select(step=self.step)
        try:
            yield
        finally:
            self.active, self.stages, self.step = saved

    def is_active(self, name: str) -> bool:
        return self.active is None or name in self.active

    @property
    def needs_teacher(self) -> bool:
        return any(term.needs_teacher for term in self.terms.values())

    @property
    def student_views(self) -> int:
        return max((term.student_views for name, term in self.terms.items() if self.is_active(name)), default=0)

    def required_taps(self) -> tuple[set[str], set[str]]:
        student_taps: set[str] = set()
        teacher_taps: set[str] = set()
        for term in self.terms.values():
            s, t = term.required_taps()
            student_taps |= s
            teacher_taps |= t
        return student_taps, teacher_taps

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> dict[str, Tensor]:
        values = {}
        for name, term in self.terms.items():
            if self.is_active(name):
                with term.only_stage(self.stages.get(name)):
                    values[name] = term(student, teacher, targets)
        if not values:
            raise ValueError(f"No loss term is active at step {self.step}; check the terms' start_step/stop_step.")
        total: Tensor | None = None  # added in order: on a small model a stack and a sum are a step's cost
        for name, value in values.items():
            weighted = value if self.weights[name] == 1.0 else self.weights[name] * value
            total = weighted if total is None else total + weighted
        return {"loss": total, **values}


def counted_rows(leading_shape: torch.Size, targets: Targets, device: torch.device) -> Tensor:
    """(N,) bool: the rows (tokens) that count. `Targets.mask` drops rows; for sequences (B, T), labels equal
    to -100 (padding, prompt tokens) drop them too. For (B,) rows (classification) labels are not a mask."""
    keep = torch.ones(leading_shape, dtype=torch.bool, device=device)
    if targets.mask is not None:
        keep = keep & targets.mask.to(device).bool().reshape(leading_shape)
    labels = targets.labels
    if len(leading_shape) >= 2 and labels is not None and labels.shape == leading_shape:
        keep = keep & (labels.to(device) != IGNORE_INDEX)
    return keep.flatten()
