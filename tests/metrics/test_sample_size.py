"""Sample sizes for (epsilon, delta) guarantees: closed forms, scipy's binomial, and known values."""

import math

import pytest
from scipy.stats import binom, binomtest

from kdforge.metrics import (
    disagreement_upper_bound,
    exact_sample_size,
    hoeffding_sample_size,
    pac_assessment,
)


def test_hoeffding_known_value():
    # ln(20) / (2 * 0.01^2) = 14978.66 -> 14979
    assert hoeffding_sample_size(0.01, 0.05) == 14979
    n = hoeffding_sample_size(0.05, 0.01)
    assert math.exp(-2 * n * 0.05**2) <= 0.01 < math.exp(-2 * (n - 1) * 0.05**2)


def test_exact_zero_failures_rule_of_three():
    # (1 - 0.01)^n <= 0.05: n = 299 (rule of three: about 3 / epsilon)
    assert exact_sample_size(0.01, 0.05) == 299
    n = exact_sample_size(0.02, 0.01)
    # scipy: probability of 0 disagreements in n draws at rate epsilon is <= delta, not so at n - 1
    assert binom.cdf(0, n, 0.02) <= 0.01 < binom.cdf(0, n - 1, 0.02)


def test_exact_at_rate_certifies_with_scipy_interval():
    n = exact_sample_size(0.05, 0.05, rate=0.02)
    assert n is not None and n > exact_sample_size(0.05, 0.05)
    k = round(0.02 * n)
    # the one-sided 95% upper bound is the two-sided 90% interval's upper end
    upper = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").high
    assert upper == pytest.approx(0.05, abs=0.004)
    assert exact_sample_size(0.05, 0.05, rate=0.05) is None


def test_upper_bound_matches_scipy():
    for k, n in [(0, 100), (3, 360), (17, 360)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").high
        assert disagreement_upper_bound(k, n, 0.05) == pytest.approx(expected, rel=1e-9)
    assert disagreement_upper_bound(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)


def test_pac_assessment_verdicts():
    too_small = pac_assessment(200, 200, 0.01, 0.05)
    assert not too_small["certified"] and "Too few samples" in too_small["verdict"]
    assert too_small["n_needed_exact_min"] == 299 and too_small["n_needed_hoeffding"] == 14979
    certified = pac_assessment(1000, 1000, 0.01, 0.05)
    assert certified["certified"] and certified["large_enough"] and certified["disagreement_upper"] <= 0.01
    hopeless = pac_assessment(900, 1000, 0.01, 0.05)
    assert not hopeless["certified"] and hopeless["n_needed_exact_at_observed_rate"] is None
    assert "more data will not certify" in hopeless["verdict"]
    almost = pac_assessment(994, 1000, 0.01, 0.05)
    assert not almost["certified"] and almost["n_needed_exact_at_observed_rate"] > 1000


@pytest.mark.parametrize("eps,delta", [(0.0, 0.05), (1.0, 0.05), (0.1, 0.0), (0.1, 1.5)])
def test_bad_epsilon_delta(eps, delta):
    with pytest.raises(ValueError, match="must be in"):
        hoeffding_sample_size(eps, delta)
