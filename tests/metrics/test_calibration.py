"""ECE and reliability bins on hand-built examples, and against a direct numpy computation."""

import numpy as np
import pytest
import torch

from kdforge.metrics import agreement_by_confidence, expected_calibration_error, reliability_bins


def logits_for(confidences, predicted, num_classes=2):
    """Two-class logits whose softmax max equals each confidence, on the given class."""
    rows = []
    for c, k in zip(confidences, predicted, strict=True):
        p = np.full(num_classes, max((1 - c) / (num_classes - 1), 1e-300))
        p[k] = c
        rows.append(np.log(p))
    return torch.tensor(np.array(rows))


def test_ece_hand_built_example():
    # 4 rows at confidence 0.9 (3 correct), 2 rows at 0.6 (1 correct), 10 bins:
    # bin (0.8, 0.9]: |0.75 - 0.9| * 4/6 = 0.1; bin (0.5, 0.6]: |0.5 - 0.6| * 2/6 = 1/30
    logits = logits_for([0.9, 0.9, 0.9, 0.9, 0.6, 0.6], [0, 0, 0, 0, 1, 1])
    labels = torch.tensor([0, 0, 0, 1, 1, 0])
    assert expected_calibration_error(labels, logits, n_bins=10) == pytest.approx(0.1 + 1 / 30, abs=1e-9)
    bins = reliability_bins(labels, logits, n_bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 2, 0, 0, 4, 0]
    assert bins[8]["accuracy"] == pytest.approx(0.75)
    assert bins[8]["confidence"] == pytest.approx(0.9)


def test_perfectly_calibrated_is_zero_and_unlabelled_rows_skipped():
    logits = logits_for([0.5, 0.5, 1.0], [0, 0, 1])
    labels = torch.tensor([0, 1, 1])
    assert expected_calibration_error(labels, logits, n_bins=5) == pytest.approx(0.0, abs=1e-12)
    # an unlabelled row with a wrong confident prediction changes nothing
    logits2 = torch.cat([logits, logits_for([0.99], [0])])
    labels2 = torch.cat([labels, torch.tensor([-100])])
    assert expected_calibration_error(labels2, logits2, n_bins=5) == pytest.approx(0.0, abs=1e-12)


def test_ece_matches_direct_numpy_loop():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(400, 5, generator=g) * 3
    labels = torch.randint(0, 5, (400,), generator=g)
    p = torch.softmax(logits.double(), 1).numpy()
    conf, pred = p.max(1), p.argmax(1)
    correct = pred == labels.numpy()
    edges = np.linspace(0, 1, 16)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    assert expected_calibration_error(labels, logits, n_bins=15) == pytest.approx(ece, abs=1e-12)


def test_agreement_by_confidence():
    teacher = logits_for([0.95, 0.95, 0.55, 0.55], [0, 0, 0, 1])
    student = logits_for([0.8, 0.8, 0.8, 0.8], [0, 0, 1, 0])
    bins = agreement_by_confidence(teacher, student, n_bins=2)
    assert [b["count"] for b in bins] == [0, 4]
    bins = agreement_by_confidence(teacher, student, n_bins=10)
    assert bins[9]["accuracy"] == 1.0 and bins[9]["count"] == 2
    assert bins[5]["accuracy"] == 0.0 and bins[5]["count"] == 2


def test_bad_bins_raise():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(torch.tensor([0]), torch.zeros(1, 2), n_bins=0)
    with pytest.raises(ValueError, match="no labelled rows"):
        expected_calibration_error(torch.tensor([-100]), torch.zeros(1, 2))
