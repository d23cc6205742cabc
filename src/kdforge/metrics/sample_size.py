"""How many evaluation samples a fidelity guarantee needs, and whether a given set is enough.

The claim kdforge makes is PAC-style: "with confidence 1 - delta, the student disagrees with the teacher's
top-1 prediction on at most epsilon of inputs drawn like the evaluation set". Two ways to size the set:

- **Hoeffding** (distribution-free, one-sided): with n >= ln(1/delta) / (2 epsilon^2) samples, the true
  disagreement rate is at most the observed rate + epsilon with probability >= 1 - delta, whatever the rate.
- **Exact binomial** (Clopper-Pearson): with k disagreements observed in n samples, the one-sided upper
  bound U = Beta quantile (1 - delta; k + 1, n - k) holds with confidence 1 - delta. The smallest n that can
  certify `disagreement <= epsilon` (k = 0) solves (1 - epsilon)^n <= delta, i.e. n >= ln(delta) / ln(1 - epsilon)
  (about 3 / epsilon at delta = 0.05, the "rule of three"). Far fewer samples than Hoeffding, because it uses the
  exact distribution of the count.
"""

from __future__ import annotations

import math
from typing import Any


def _check_eps_delta(epsilon: float, delta: float, owner: str) -> None:
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"The 'epsilon' parameter of {owner} must be in (0, 1). Got {epsilon!r} instead.")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"The 'delta' parameter of {owner} must be in (0, 1). Got {delta!r} instead.")


def hoeffding_sample_size(epsilon: float, delta: float) -> int:
    """Smallest n with exp(-2 n epsilon^2) <= delta: the observed disagreement is within epsilon of the true one
    (one-sided) with probability >= 1 - delta. E.g. epsilon = 0.01, delta = 0.05 needs 14,979 samples."""
    _check_eps_delta(epsilon, delta, "hoeffding_sample_size")
    return math.ceil(math.log(1.0 / delta) / (2.0 * epsilon**2) - 1e-9)


def disagreement_upper_bound(disagreements: int, n: int, delta: float) -> float:
    """One-sided exact (Clopper-Pearson) upper bound on the disagreement rate at confidence 1 - delta."""
    if n <= 0 or not 0 <= disagreements <= n:
        raise ValueError(f"disagreement_upper_bound needs 0 <= disagreements <= n and n > 0; got {disagreements} "
                         f"of {n}.")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"The 'delta' parameter of disagreement_upper_bound must be in (0, 1). Got {delta!r}.")
    if disagreements == n:
        return 1.0
    from scipy.stats import beta  # on use: importing scipy.stats takes about half a second
    return float(beta.ppf(1.0 - delta, disagreements + 1, n - disagreements))


def exact_sample_size(epsilon: float, delta: float, rate: float = 0.0) -> int | None:
    """Smallest n at which a disagreement rate of `rate` (k = rate * n disagreements) is certified to be
    <= epsilon with confidence 1 - delta by the exact one-sided binomial bound.

    Args:
        epsilon: The disagreement rate to certify.
        delta: One minus the confidence.
        rate: The disagreement rate expected (observed); 0 gives the absolute minimum,
            ceil(ln(delta) / ln(1 - epsilon)).

    Returns:
        The sample size, or None when `rate >= epsilon` (no amount of data certifies it).
    """
    _check_eps_delta(epsilon, delta, "exact_sample_size")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"The 'rate' parameter of exact_sample_size must be in [0, 1). Got {rate!r} instead.")
    if rate >= epsilon:
        return None
    if rate == 0.0:
        return math.ceil(math.log(delta) / math.log1p(-epsilon) - 1e-9)

    def certified(n: int) -> bool:
        k = rate * n  # real-valued count: a planning estimate, monotone in n
        from scipy.stats import beta  # on use: importing scipy.stats takes about half a second
        return float(beta.ppf(1.0 - delta, k + 1.0, n - k)) <= epsilon

    low = math.ceil(math.log(delta) / math.log1p(-epsilon) - 1e-9)
    high = low
    while not certified(high):
        low, high = high, high * 2
    while high - low > 1:  # invariant: certified(high), and low is not (or is the k = 0 minimum)
        mid = (low + high) // 2
        low, high = (low, mid) if certified(mid) else (mid, high)
    return high if not certified(low) else low


def pac_assessment(agreements: int, n: int, epsilon: float, delta: float) -> dict[str, Any]:
    """Whether `agreements` of `n` evaluation rows certify `disagreement <= epsilon` at confidence 1 - delta.

    Returns:
        A dict: `epsilon`, `delta`, `n`, `disagreements`, `disagreement_rate`, `disagreement_upper` (exact
        one-sided bound at 1 - delta), `certified` (upper <= epsilon), `n_needed_exact_min` (n needed even with
        no disagreement), `n_needed_exact_at_observed_rate` (None when the observed rate is >= epsilon),
        `n_needed_hoeffding`, `large_enough` (certified, or n reaches the exact requirement at the observed rate),
        `large_enough_hoeffding`, and `verdict`, a sentence.
    """
    _check_eps_delta(epsilon, delta, "pac_assessment")
    if n <= 0 or not 0 <= agreements <= n:
        raise ValueError(f"pac_assessment needs 0 <= agreements <= n and n > 0; got {agreements} of {n}.")
    disagreements = n - agreements
    rate = disagreements / n
    upper = disagreement_upper_bound(disagreements, n, delta)
    n_min = exact_sample_size(epsilon, delta)
    n_rate = exact_sample_size(epsilon, delta, rate) if rate < epsilon else None
    n_hoeffding = hoeffding_sample_size(epsilon, delta)
    certified = upper <= epsilon
    conf = f"{100 * (1 - delta):g}%"
    if certified:
        verdict = (f"Certified: with {conf} confidence the student disagrees with the teacher on at most "
                   f"{100 * upper:.2f}% (<= epsilon = {100 * epsilon:g}%) of inputs drawn like these {n}.")
    elif n < n_min:
        verdict = (f"Too few samples: {n} cannot certify disagreement <= {100 * epsilon:g}% at {conf} confidence "
                   f"even with zero disagreements; at least {n_min} are needed.")
    elif n_rate is None:
        verdict = (f"Not certified: the observed disagreement {100 * rate:.2f}% is not below epsilon = "
                   f"{100 * epsilon:g}%; more data will not certify it, a closer student might.")
    else:
        verdict = (f"Not yet certified: the exact {conf} upper bound is {100 * upper:.2f}% > {100 * epsilon:g}%. "
                   f"At the observed rate ({100 * rate:.2f}%) about {n_rate} samples would certify it.")
    return {
        "epsilon": epsilon, "delta": delta, "n": n, "disagreements": disagreements, "disagreement_rate": rate,
        "disagreement_upper": upper, "certified": certified, "n_needed_exact_min": n_min,
        "n_needed_exact_at_observed_rate": n_rate, "n_needed_hoeffding": n_hoeffding,
        "large_enough": certified or (n_rate is not None and n >= n_rate), "large_enough_hoeffding": n >= n_hoeffding,
        "verdict": verdict,
    }
