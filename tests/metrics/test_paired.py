"""The paired test behind every "X beats Y" sentence: exact McNemar against scipy, Connor's sample size by hand
and by simulation."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from kdforge.metrics import mcnemar_exact, mcnemar_rows_needed, paired_test


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (1, 0), (0, 5), (3, 7), (12, 2), (40, 61), (100, 100)])
def test_mcnemar_matches_scipy_binomtest(a_only, b_only):
    expected = 1.0 if a_only + b_only == 0 else binomtest(a_only, a_only + b_only, 0.5).pvalue
    assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_one_row_out_of_36_is_not_a_result():
    """The wine case of issue 16: the student right on one more row than its scratch twin."""
    a = np.ones(36, bool)
    b = a.copy()
    b[0] = False
    result = paired_test([a], [b])
    assert (result["a_only"], result["b_only"]) == (1, 0) and result["p_value"] == 1.0
    assert not result["significant"] and result["better"] is None
    assert result["gap"] == pytest.approx(1 / 36)
    assert result["rows_needed"] > 36 and result["power"] == 0.8


def test_seeds_sum_their_discordant_rows():
    rng = np.random.default_rng(0)
    a = [rng.random(200) < 0.9 for _ in range(3)]
    b = [rng.random(200) < 0.6 for _ in range(3)]
    result = paired_test(a, b, alpha=0.01)
    a_only = sum(int((x & ~y).sum()) for x, y in zip(a, b, strict=True))
    b_only = sum(int((~x & y).sum()) for x, y in zip(a, b, strict=True))
    assert (result["a_only"], result["b_only"]) == (a_only, b_only)
    assert result["p_value"] == pytest.approx(binomtest(a_only, a_only + b_only, 0.5).pvalue)
    assert result["significant"] and result["better"] == "a" and "rows_needed" not in result
    assert [s["p_value"] for s in result["per_seed"]] == [mcnemar_exact(s["a_only"], s["b_only"])
                                                          for s in result["per_seed"]]


def test_rows_needed_by_hand_and_by_simulation():
    # Connor (1987): (1.959964 * sqrt(0.2) + 0.841621 * sqrt(0.2 - 0.05^2))^2 / 0.05^2 = 625.55 -> 626
    n = mcnemar_rows_needed(0.2, 0.05, alpha=0.05, power=0.8)
    hand = (1.959964 * math.sqrt(0.2) + 0.841621 * math.sqrt(0.2 - 0.0025)) ** 2 / 0.0025
    assert n == math.ceil(hand) == 626
    # at that size the exact test finds a true 5-point gap (12.5% vs 7.5% one-sided discordance) about 80% of times
    rng = np.random.default_rng(1)
    counts = rng.multinomial(n, [0.125, 0.075, 0.8], size=2000)
    hits = np.mean([mcnemar_exact(int(a), int(b)) < 0.05 for a, b, _ in counts])
    assert 0.74 <= hits <= 0.86
    assert mcnemar_rows_needed(0.2, 0.0) is None


def test_refuses_rows_that_do_not_line_up():
    with pytest.raises(ValueError, match="same test rows"):
        paired_test([np.ones(5, bool)], [np.ones(6, bool)])
