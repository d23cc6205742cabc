"""Is one model more accurate than another on the same test rows? A paired test, not two overlapping intervals.

Only the discordant rows carry information: `a_only` rows model A gets right and B wrong, `b_only` the reverse.
Under "same accuracy", each discordant row is a fair coin, so the exact McNemar test is a two-sided binomial
test of `a_only` out of `a_only + b_only` at p = 1/2. Several seeds (each a pair of models on the same rows) are
combined by summing their discordant counts into one exact test; this treats every (seed, row) pair as
independent, which the shared rows make slightly optimistic, so the per-seed tests are kept beside it.

When the test finds nothing, `mcnemar_rows_needed` says how many test rows would detect the observed gap:
Connor's (1987) normal-approximation sample size for McNemar's test,
n = (z_{1-alpha/2} sqrt(psi) + z_{power} sqrt(psi - d^2))^2 / d^2, with psi the discordant share of rows and d
the accuracy gap, both as observed (divided by the seeds, whose rows all count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

METHOD = "exact McNemar (two-sided binomial test on discordant rows, summed over seeds)"
POWER_METHOD = "Connor (1987) normal approximation for McNemar's test"


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: P(a count at least as uneven as observed | n discordant, p = 1/2).

    Equals `scipy.stats.binomtest(a_only, a_only + b_only, 0.5).pvalue`; 1.0 with no discordant row.
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"mcnemar_exact needs non-negative counts; got {a_only} and {b_only}.")
    n = a_only + b_only
    if n == 0:
        return 1.0
    from scipy.stats import binom  # on use: importing scipy.stats takes about half a second
    return float(min(1.0, 2.0 * binom.cdf(min(a_only, b_only), n, 0.5)))


def mcnemar_rows_needed(discordant_rate: float, gap: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Paired rows needed for McNemar's test at level `alpha` to detect an accuracy gap `gap` with probability
    `power`, when a share `discordant_rate` of rows is discordant (Connor 1987). None when there is no gap."""
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"mcnemar_rows_needed needs alpha and power in (0, 1); got {alpha!r} and {power!r}.")
    gap = abs(gap)
    if gap == 0.0 or discordant_rate <= 0.0:
        return None
    psi = max(discordant_rate, gap)  # the discordant share is at least the gap it produces
    from scipy.stats import norm  # on use: importing scipy.stats takes about half a second
    root = norm.ppf(1 - alpha / 2) * math.sqrt(psi) + norm.ppf(power) * math.sqrt(max(psi - gap**2, 0.0))
    return math.ceil(root**2 / gap**2 - 1e-9)


def _as_bool(values: Any) -> np.ndarray:
    array = np.asarray(values.cpu() if hasattr(values, "cpu") else values)
    return array.astype(bool).reshape(-1)


def paired_test(correct_a: Sequence[Any], correct_b: Sequence[Any], alpha: float = 0.05,
                power: float = 0.8) -> dict[str, Any]:
    """Compare two models' per-row correctness on the same test rows, one pair of arrays per seed.

    Args:
        correct_a: Per seed, a boolean array: model A's prediction is right on that test row.
        correct_b: The same for model B, on the same rows in the same order.
        alpha: Level of the two-sided test.
        power: Power at which `rows_needed` is computed.

    Returns:
        A JSON-ready dict: `method`, `alpha`, `seeds`, `rows` (test rows per seed), `a_only`, `b_only` (summed
        discordant rows), `accuracy_a`, `accuracy_b`, `gap` (A - B, mean over seeds), `p_value`, `significant`
        (p < alpha), `better` ("a", "b" or None), `per_seed` (each seed's counts and exact p), and, when not
        significant, `rows_needed` (test rows per seed that would detect the observed gap; None when the gap
        is 0) with `power` and `power_method`.
    """
    if len(correct_a) != len(correct_b) or not correct_a:
        raise ValueError(f"paired_test needs one array per seed for each model; got {len(correct_a)} and "
                         f"{len(correct_b)}.")
    per_seed, rows = [], None
    for a, b in zip(correct_a, correct_b, strict=True):
        a, b = _as_bool(a), _as_bool(b)
        if a.shape != b.shape or (rows is not None and len(a) != rows):
            raise ValueError("paired_test: both models must be scored on the same test rows in every seed; got "
                             f"{len(a)} and {len(b)} rows.")
        rows = len(a)
        a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
        per_seed.append({"a_only": a_only, "b_only": b_only, "accuracy_a": float(a.mean()),
                         "accuracy_b": float(b.mean()), "p_value": mcnemar_exact(a_only, b_only)})
    assert rows is not None
    a_only = sum(s["a_only"] for s in per_seed)
    b_only = sum(s["b_only"] for s in per_seed)
    seeds = len(per_seed)
    p_value = mcnemar_exact(a_only, b_only)
    significant = p_value < alpha
    gap = (a_only - b_only) / (seeds * rows) if rows else 0.0
    out: dict[str, Any] = {
        "method": METHOD, "alpha": alpha, "seeds": seeds, "rows": rows, "a_only": a_only, "b_only": b_only,
        "accuracy_a": float(np.mean([s["accuracy_a"] for s in per_seed])),
        "accuracy_b": float(np.mean([s["accuracy_b"] for s in per_seed])),
        "gap": gap, "p_value": p_value, "significant": significant,
        "better": ("a" if a_only > b_only else "b") if significant else None, "per_seed": per_seed,
    }
    if not significant:
        total = mcnemar_rows_needed((a_only + b_only) / (seeds * rows), gap, alpha, power) if rows else None
        out.update(rows_needed=None if total is None else math.ceil(total / seeds), power=power,
                   power_method=POWER_METHOD)
    return out
