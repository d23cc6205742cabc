"""Paired comparisons of students on the same test rows: the report's "does distillation help?" verdict, and the
sentence `kdforge compare RUN_A RUN_B` prints (`report.comparison`). Both rest on `kdforge.metrics.paired_test`
(exact McNemar, seeds summed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor



def correct_rows(labels: Tensor, logits: Tensor) -> np.ndarray:
    """Per counted test row (labels -100 left out, as `metrics.accuracy` does): is the top-1 prediction right?"""
    keep = labels != -100
    return (logits.argmax(dim=-1)[keep] == labels[keep]).cpu().numpy()


def kd_gain_test(labels: Tensor, student_logits: dict[int, Tensor], scratch_logits: dict[int, Tensor],
                 confidence: float) -> dict[str, Any]:
    """The distilled student (A) against its scratch twin (B), seed by seed on the test rows, at level
    1 - confidence (`eval.confidence`)."""
    from kdforge.metrics import paired_test

    seeds = [s for s in student_logits if s in scratch_logits]
    result = paired_test([correct_rows(labels, student_logits[s]) for s in seeds],
                         [correct_rows(labels, scratch_logits[s]) for s in seeds], alpha=round(1 - confidence, 10))
    for seed, entry in zip(seeds, result["per_seed"], strict=True):
        entry["seed"] = seed
    return result


def verdict(test: dict[str, Any], a: str, b: str, what: str) -> str:
    """One plain sentence from a `paired_test` result: A helps / hurts, or no detectable difference.

    `what` finishes the claim ("over the same student trained from scratch ...")."""
    seeds = f" x {test['seeds']} seeds" if test["seeds"] > 1 else ""
    evidence = (f"on the same {test['rows']:,} test rows{seeds}, {a} alone is right on {test['a_only']} and {b} "
                f"alone on {test['b_only']} (exact McNemar test, p = {test['p_value']:.3g}, level "
                f"{test['alpha']:g})")
    gap = f"{100 * test['gap']:+.2f} accuracy points"
    if test["significant"]:
        return f"{a.capitalize()} {'beats' if test['better'] == 'a' else 'trails'} {b} here: {gap} {what}; {evidence}."
    needed = test.get("rows_needed")
    size = (f" About {needed:,} test rows per seed would detect a gap of this size with {100 * test['power']:g}% "
            f"power ({test['power_method']})." if needed else " The two are right on the same number of rows.")
    return f"No detectable difference at this test size: {gap} {what}, but {evidence}.{size}"


def kd_verdict(test: dict[str, Any]) -> str:
    """The report's "does distillation help?" sentence."""
    what = "over the same student trained from scratch with the same optimizer steps, batch size and seeds"
    sentence = verdict(test, "the distilled student", "the scratch student", what)
    if test["significant"]:
        return sentence.replace("The distilled student beats the scratch student here",
                                "Distillation helps here").replace(
            "The distilled student trails the scratch student here", "Distillation hurts here")
    return sentence
