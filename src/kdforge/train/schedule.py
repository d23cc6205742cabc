"""When each loss term counts: step windows and progressive layer-wise stages, one function of the step.

A term may count only in a window of optimizer steps `[start, stop)` (FitNets' hint stage, then KD). A term with
`progressive` steps N (MobileBERT's progressive knowledge transfer, Sun et al. 2020,
https://arxiv.org/abs/2004.02984) trains its layer stages one at a time from its start step: stage k alone during
steps [start + kN, start + (k+1)N), then all stages together, while the student layers below stage k stay put.
Everything here depends on the step only, so a resumed run continues the same schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from kdforge.capture import resolve_module
from kdforge.errors import RecipeError
from kdforge.losses.base import DistillLoss, WeightedSum


@dataclass(frozen=True)
class StepPlan:
    """What counts at one optimizer step."""

    step: int
    active: frozenset[str]  # the loss terms computed
    stages: Mapping[str, int]  # progressive term -> the one stage it trains alone (absent: every pair counts)
    frozen: frozenset[str]  # student taps held still: the layers below each progressive term's current stage
    training: frozenset[str]  # the current stages' own taps (a module tapped by both trains)


class TermSchedule:
    """Which loss terms are active at a step, which stage each progressive term trains, which student taps are
    frozen. Without windows or progressive terms, every term counts at every step.

    Args:
        terms: The loss terms by name (`WeightedSum.terms`); progressive terms give their `layer_stages()`.
        windows: term -> (start, stop) optimizer steps; stop None: to the end. Missing terms: always.
        progressive: term -> steps per layer stage.
    """

    def __init__(self, terms: Mapping[str, DistillLoss], windows: Mapping[str, tuple[int, int | None]] | None = None,
                 progressive: Mapping[str, int | None] | None = None) -> None:
        self.windows = {name: (windows or {}).get(name, (0, None)) for name in terms}
        self.progressive = {name: n for name, n in (progressive or {}).items() if n is not None}
        self.stages: dict[str, list[set[str]]] = {}  # progressive term -> the student taps of each stage
        for name, n in self.progressive.items():
            if name not in terms:
                raise ValueError(f"TermSchedule: progressive term {name!r} is not one of the terms {sorted(terms)}.")
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"TermSchedule: progressive steps of {name!r} must be an integer >= 1; got {n!r}.")
            self.stages[name] = terms[name].layer_stages()
            if not self.stages[name]:
                raise ValueError(f"{type(terms[name]).__name__} has no layer pairs to train one at a time.")

    def is_active(self, name: str, step: int) -> bool:
        start, stop = self.windows[name]
        return step >= start and (stop is None or step < stop)

    def stage(self, name: str, step: int) -> int | None:
        """The stage a progressive term trains alone at `step`; None: every pair counts (or the term is off)."""
        n = self.progressive.get(name)
        if n is None or not self.is_active(name, step):
            return None
        k = (step - self.windows[name][0]) // n
        return k if k < len(self.stages[name]) else None

    def at(self, step: int) -> StepPlan:
        stages = {name: k for name in self.progressive if (k := self.stage(name, step)) is not None}
        frozen = set().union(*(taps for name, k in stages.items() for taps in self.stages[name][:k]))
        training = set().union(*(self.stages[name][k] for name, k in stages.items()))
        return StepPlan(step, frozenset(name for name in self.windows if self.is_active(name, step)), stages,
                        frozenset(frozen), frozenset(training))

    def select(self, loss: WeightedSum, step: int) -> StepPlan:
        """Point `loss` at the terms and stages of `step`; returns the plan."""
        plan = self.at(step)
        loss.select(plan.active, plan.stages, step)
        return plan

    def apply(self, module: nn.Module, step: int) -> list[nn.Parameter]:
        """Before optimizer step `step`: select `module.loss`'s terms, and return the student parameters to hold
        still (the loop drops their gradients: a zero gradient would still move weights through Adam's momentum
        and weight decay, a missing one makes every torch optimizer skip the parameter).

        `module` is a DistillModule or MutualModule: its `loss`, its `student` and the student's `taps`.
        """
        return self.frozen_parameters(module, self.select(module.loss, step))

    def frozen_parameters(self, module: nn.Module, plan: StepPlan) -> list[nn.Parameter]:
        """The parameters of the modules tapped by `plan.frozen` and not by `plan.training`."""
        if not plan.frozen:
            return []

        def parameters(tap: str) -> list[nn.Parameter]:
            return list(resolve_module(module.student, module.taps[tap]).parameters())

        training = {id(p) for tap in plan.training for p in parameters(tap)}
        frozen = {id(p): p for tap in sorted(plan.frozen) for p in parameters(tap)}
        return [p for key, p in frozen.items() if key not in training]

    def check_layer_order(self, student: nn.Module, taps: Mapping[str, str]) -> None:
        """Progressive stages must go bottom layer first: stage k freezes the layers of stages < k, which is
        only "the layers below" when the tapped modules come in the student's own module order."""
        order = {name: i for i, (name, _) in enumerate(student.named_modules())}
        for name, stages in self.stages.items():
            if any(tap not in taps for stage in stages for tap in stage):
                return  # preflight names the undeclared tap
            # each stage's lowest tapped module (a TinyBERT stage taps a layer and its query/key projections)
            firsts = [min(stage, key=lambda tap: order.get(taps[tap], -1)) for stage in stages]
            for k in range(1, len(firsts)):
                below, above = firsts[k - 1], firsts[k]
                if order.get(taps[above], -1) < order.get(taps[below], -1):
                    raise RecipeError(
                        f"loss term {name!r}: progressive_steps trains its pairs bottom layer first, but pair {k} "
                        f"(student tap {above!r} = {taps[above]!r}) comes before pair {k - 1} "
                        f"({below!r} = {taps[below]!r}) in the student. List the pairs from the "
                        "lowest layer up.")
