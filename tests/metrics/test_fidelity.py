import pytest
import torch
from scipy.stats import binomtest

from kdforge.metrics import accuracy, clopper_pearson, clopper_pearson_lower, top1_agreement


@pytest.mark.parametrize("k,n", [(0, 10), (5, 10), (10, 10), (97, 100), (355, 360), (1, 1)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lower, upper = clopper_pearson(k, n, 0.95)
    assert lower == pytest.approx(ci.low, abs=1e-9)
    assert upper == pytest.approx(ci.high, abs=1e-9)


def test_clopper_pearson_known_table_values():
    # Classic values: 0 of 10 -> upper 0.3085; 5 of 10 -> (0.1871, 0.8129)
    assert clopper_pearson(0, 10)[1] == pytest.approx(0.3085, abs=1e-4)
    lower, upper = clopper_pearson(5, 10)
    assert (lower, upper) == (pytest.approx(0.1871, abs=1e-4), pytest.approx(0.8129, abs=1e-4))


def test_one_sided_lower_bound():
    # all n agree: the one-sided lower bound solves p^n = alpha, i.e. alpha^(1/n)
    assert clopper_pearson_lower(100, 100, 0.95) == pytest.approx(0.05 ** (1 / 100), rel=1e-9)
    # one-sided at 95% equals the two-sided 90% interval's lower end
    assert clopper_pearson_lower(90, 100, 0.95) == pytest.approx(clopper_pearson(90, 100, 0.90)[0], rel=1e-9)
    assert clopper_pearson_lower(0, 10) == 0.0


@pytest.mark.parametrize("k,n", [(-1, 10), (11, 10), (0, 0)])
def test_bad_counts_raise(k, n):
    with pytest.raises(ValueError):
        clopper_pearson(k, n)


def test_agreement_and_accuracy_counts():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    student = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    assert top1_agreement(teacher, student) == (1, 3)
    assert accuracy(torch.tensor([0, 0, -100]), student) == (2, 2)
