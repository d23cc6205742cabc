"""KL / JS / top-k overlap / loyalty / per-class / confusion against scipy, sklearn and hand values."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from scipy.stats import entropy
from sklearn.metrics import confusion_matrix

from kdforge.errors import ShapeMismatchError
from kdforge.metrics import (
    js_divergence,
    kl_to_teacher,
    label_loyalty,
    per_class_agreement,
    prediction_confusion,
    probability_loyalty,
    top_k_overlap,
)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(1)
    return torch.randn(50, 6, generator=g) * 2, torch.randn(50, 6, generator=g) * 2


def test_kl_matches_scipy_entropy(logits):
    t, s = logits
    p, q = softmax(t.double().numpy(), axis=1), softmax(s.double().numpy(), axis=1)
    expected = np.mean([entropy(p[i], q[i]) for i in range(len(p))])
    assert kl_to_teacher(t, s) == pytest.approx(expected, rel=1e-9)
    # temperature divides both logits
    p2, q2 = softmax(t.double().numpy() / 3, axis=1), softmax(s.double().numpy() / 3, axis=1)
    assert kl_to_teacher(t, s, temperature=3.0) == pytest.approx(
        np.mean([entropy(p2[i], q2[i]) for i in range(len(p2))]), rel=1e-9)


def test_kl_hand_value_and_zero():
    # p = (1/2, 1/2), q = softmax(ln 3, 0) = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2
    t = torch.tensor([[0.0, 0.0]])
    s = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    assert kl_to_teacher(t, s) == pytest.approx(0.5 * math.log(2 / 3) + 0.5 * math.log(2), rel=1e-12)
    assert kl_to_teacher(t, t.clone()) == pytest.approx(0.0, abs=1e-15)


def test_js_matches_scipy(logits):
    t, s = logits
    p, q = softmax(t.double().numpy(), axis=1), softmax(s.double().numpy(), axis=1)
    # scipy returns the JS *distance* (square root of the divergence)
    expected = np.mean([jensenshannon(p[i], q[i]) ** 2 for i in range(len(p))])
    assert js_divergence(t, s) == pytest.approx(expected, rel=1e-9)
    assert js_divergence(t, s) == pytest.approx(js_divergence(s, t), rel=1e-12)


def test_js_bounded_by_ln2_for_disjoint_predictions():
    t = torch.tensor([[100.0, -100.0]])
    s = torch.tensor([[-100.0, 100.0]])
    assert js_divergence(t, s) == pytest.approx(math.log(2), rel=1e-9)
    assert probability_loyalty(t, s) == pytest.approx(0.0, abs=1e-9)


def test_probability_loyalty_matches_authors_scipy_recipe(logits):
    t, s = logits
    p, q = softmax(t.double().numpy(), axis=1), softmax(s.double().numpy(), axis=1)
    expected = np.mean([1 - jensenshannon(p[i], q[i], base=2) for i in range(len(p))])
    assert probability_loyalty(t, s) == pytest.approx(expected, rel=1e-9)
    assert probability_loyalty(t, t.clone()) == pytest.approx(1.0, abs=1e-7)


def test_label_loyalty_is_agreement_rate():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    assert label_loyalty(t, s) == 0.5


def test_top_k_overlap_hand_example():
    t = torch.tensor([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    s = torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    # row 0: {0,1} vs {0,2} -> 1/2; row 1: {0,1} vs {3,2} -> 0
    assert top_k_overlap(t, s, 2) == pytest.approx(0.25)
    assert top_k_overlap(t, s, 4) == 1.0
    assert top_k_overlap(t, s, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="k must be in"):
        top_k_overlap(t, s, 5)


def test_per_class_and_confusion_against_sklearn(logits):
    t, s = logits
    labels = torch.arange(50) % 6
    rows = per_class_agreement(labels, t, s)
    pt, ps = t.argmax(1).numpy(), s.argmax(1).numpy()
    y = labels.numpy()
    for row in rows:
        m = y == row["class"]
        assert row["n"] == m.sum()
        assert row["teacher_accuracy"] == pytest.approx((pt[m] == y[m]).mean())
        assert row["student_accuracy"] == pytest.approx((ps[m] == y[m]).mean())
        assert row["agreement"] == pytest.approx((pt[m] == ps[m]).mean())
    assert np.array_equal(np.array(prediction_confusion(t, s)), confusion_matrix(pt, ps, labels=range(6)))


def test_shape_mismatch_raises():
    with pytest.raises(ShapeMismatchError, match="kl_to_teacher: teacher and student logits"):
        kl_to_teacher(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ShapeMismatchError, match="per_class_agreement: labels"):
        per_class_agreement(torch.zeros(2, dtype=torch.long), torch.zeros(3, 4), torch.zeros(3, 4))
