import math

import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import IGNORE_INDEX, Outputs, Targets
from kdforge.losses.dkd import DKDLoss
from kdforge.losses.kd import KDLoss


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def dkd_by_hand(student, teacher, labels, alpha, beta, temperature):
    """Eq. (1)-(3) of Zhao et al. with plain Python: binary target/rest KL and the renormalised rest KL."""
    total = 0.0
    for s_row, t_row, y in zip(student, teacher, labels, strict=True):
        ps = softmax([v / temperature for v in s_row])
        pt = softmax([v / temperature for v in t_row])
        tckd = kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
        rest_s = [p / (1 - ps[y]) for k, p in enumerate(ps) if k != y]
        rest_t = [p / (1 - pt[y]) for k, p in enumerate(pt) if k != y]
        total += alpha * tckd + beta * kl(rest_t, rest_s)
    return temperature**2 * total / len(student)


STUDENT = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.2], [0.3, 0.3, 0.1, 2.0]]
TEACHER = [[2.0, 0.0, 1.0, 0.5], [0.5, 0.5, 0.5, -2.0], [1.5, -0.5, 0.0, 1.0]]
LABELS = [0, 2, 3]


def dkd(loss, student=STUDENT, teacher=TEACHER, labels=LABELS, mask=None):
    return loss(Outputs(logits=torch.tensor(student)), Outputs(logits=torch.tensor(teacher)),
                Targets(labels=torch.tensor(labels), mask=mask)).item()


@pytest.mark.parametrize(("alpha", "beta", "temperature"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (0.0, 1.0, 2.0)])
def test_matches_hand_computation(alpha, beta, temperature):
    expected = dkd_by_hand(STUDENT, TEACHER, LABELS, alpha, beta, temperature)
    assert dkd(DKDLoss(alpha, beta, temperature)) == pytest.approx(expected, rel=1e-5)


def test_is_classic_kd_when_nckd_weight_is_one_minus_teacher_target_prob():
    """Eq. (4): KD = TCKD + (1 - p_t[target]) · NCKD, checked row by row against KDLoss."""
    temperature = 2.0
    for s_row, t_row, y in zip(STUDENT, TEACHER, LABELS, strict=True):
        weight = 1 - softmax([v / temperature for v in t_row])[y]
        decoupled = dkd(DKDLoss(1.0, weight, temperature), [s_row], [t_row], [y])
        classic = KDLoss(temperature)(Outputs(logits=torch.tensor([s_row])), Outputs(logits=torch.tensor([t_row])),
                                      Targets()).item()
        assert decoupled == pytest.approx(classic, rel=1e-5)


def test_unlabelled_rows_are_skipped_or_take_the_teacher_class():
    labels = [0, IGNORE_INDEX, 3]
    skipped = dkd(DKDLoss(), labels=labels)
    assert skipped == pytest.approx(dkd_by_hand([STUDENT[0], STUDENT[2]], [TEACHER[0], TEACHER[2]], [0, 3],
                                                1.0, 8.0, 4.0), rel=1e-5)
    pseudo = dkd(DKDLoss(pseudo_labels=True), labels=labels)
    teacher_top = max(range(4), key=lambda k: TEACHER[1][k])
    assert pseudo == pytest.approx(dkd_by_hand(STUDENT, TEACHER, [0, teacher_top, 3], 1.0, 8.0, 4.0), rel=1e-5)


def test_degenerate_no_labelled_row_gives_zero_with_a_graph():
    s = torch.tensor(STUDENT, requires_grad=True)
    loss = DKDLoss()(Outputs(logits=s), Outputs(logits=torch.tensor(TEACHER)), Targets(labels=torch.full((3,), -100)))
    assert loss.item() == 0.0
    loss.backward()
    assert s.grad is not None


def test_beta_zero_alpha_zero_is_zero():
    assert dkd(DKDLoss(alpha=0.0, beta=0.0)) == 0.0


def test_rejects_missing_labels_and_bad_arguments():
    with pytest.raises(ValueError, match="DKDLoss needs labels"):
        DKDLoss()(Outputs(logits=torch.randn(2, 3)), Outputs(logits=torch.randn(2, 3)), Targets())
    with pytest.raises(ValueError, match="'beta' parameter of DKDLoss must be >= 0"):
        DKDLoss(beta=-1.0)
    with pytest.raises(ShapeMismatchError, match="dkd: student and teacher logits"):
        DKDLoss()(Outputs(logits=torch.randn(2, 3)), Outputs(logits=torch.randn(2, 4)),
                  Targets(labels=torch.tensor([0, 1])))
