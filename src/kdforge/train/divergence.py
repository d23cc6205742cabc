"""Did training diverge? A run whose loss explodes still finishes and writes numbers; they are not a result.

A pure function over a stage's log records (`log.jsonl`): the training loss rising by orders of magnitude over
its early value, non-finite losses, or the validation accuracy collapsing to chance after being above it.
The caller names the setting to look at (`where="recipe.train"`), since the library knows no recipe.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RISE = 100.0  # "orders of magnitude": the late loss at least 100x the early one
CHANCE_MARGIN = 0.05  # validation accuracy within 5 points of chance counts as chance
LEARNED_MARGIN = 0.15  # ... after having been at least 15 points above it


@dataclass(frozen=True)
class Divergence:
    """What the log shows; `diverged` is the verdict, `reasons` say why in words."""

    diverged: bool
    reasons: list[str]
    early_loss: float | None
    late_loss: float | None
    loss_ratio: float | None
    nonfinite_steps: int
    last_val_accuracy: float | None
    best_val_accuracy: float | None
    chance: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _late(values: list[float]) -> float:
    """The median of the last tenth (at least one value): robust to one noisy batch."""
    tail = values[-max(1, len(values) // 10):]
    return float(statistics.median(tail))


def detect_divergence(records: Sequence[dict[str, Any]], num_classes: int | None = None) -> Divergence:
    """Judge one training run from its log records (`{"step", "train/loss", ...}` and `{"step", "val/..."}`).

    Args:
        records: The lines of the stage's `log.jsonl`, in order.
        num_classes: Classes of the task, for the chance level 1 / num_classes (None: no chance check).
    """
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    finite = [v for v in losses if math.isfinite(v)]
    nonfinite = sum(1 for r in records if "nonfinite" in r) + (len(losses) - len(finite))
    early = finite[0] if finite else None
    late = _late(finite) if finite else None
    ratio = late / early if early and late is not None and early > 0 else None
    val = [r["val/accuracy"] for r in records if "val/accuracy" in r]
    chance = 1.0 / num_classes if num_classes and num_classes > 1 else None
    reasons = []
    if ratio is not None and ratio >= RISE:
        reasons.append(f"the training loss rose from {early:.3g} to {late:.3g} ({ratio:.3g}x)")
    if nonfinite and nonfinite * 10 >= max(len(losses), 1) + nonfinite:  # a tenth or more of the steps
        reasons.append(f"{nonfinite} step(s) had a non-finite loss")
    if chance is not None and val and val[-1] <= chance + CHANCE_MARGIN and (
            max(val) >= chance + LEARNED_MARGIN or (ratio is not None and ratio >= 10.0)):
        reasons.append(f"the validation accuracy ended at {100 * val[-1]:.1f}% (chance: {100 * chance:.1f}%"
                       f"{f', best {100 * max(val):.1f}%' if max(val) > val[-1] else ''})")
    return Divergence(bool(reasons), reasons, early, late, ratio, nonfinite, val[-1] if val else None,
                      max(val) if val else None, chance)


def divergence_message(name: str, found: Divergence, where: str, lr: float | None = None) -> str:
    """One plain sentence for the CLI, the log and the report: what happened and which setting to look at."""
    now = f" (now {lr:g})" if lr is not None else ""
    return (f"{name}: training diverged: {'; '.join(found.reasons)}. Its test figures are not a result. Lower "
            f"{where}.lr{now}, or set {where}.grad_clip (e.g. 1.0) or {where}.warmup_steps.")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl ([] when there is none)."""
    import json

    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_finite_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under `folder` whose module weights are all finite: a loss can stay finite
    for a step after an update has already sent a weight to inf, so the newest checkpoint is not always good."""
    import torch
    from safetensors.torch import load_file

    for path in sorted(folder.glob("step-*"), reverse=True):
        weights = path / "module.safetensors"
        if not weights.is_file():
            continue
        try:
            tensors = load_file(str(weights))
        except Exception:  # noqa: BLE001 - a damaged checkpoint is not a good one
            continue
        if all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point()):
            return path
    return None
