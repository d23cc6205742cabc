import math

import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.kd import KDLoss


def kd_by_hand(student, teacher, temperature):
    """T^2 * mean over rows of sum_k p_t log(p_t / p_s), written out with plain exp/log."""
    total = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        zs = [v / temperature for v in s_row]
        zt = [v / temperature for v in t_row]
        ps = [math.exp(v) / sum(math.exp(u) for u in zs) for v in zs]
        pt = [math.exp(v) / sum(math.exp(u) for u in zt) for v in zt]
        total += sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))
    return temperature**2 * total / len(student)


def test_matches_hand_computation():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 0.0, 1.0], [0.5, 0.5, 0.5]]
    loss = KDLoss(temperature=2.0)(Outputs(logits=torch.tensor(student)), Outputs(logits=torch.tensor(teacher)),
                                   Targets())
    assert loss.item() == pytest.approx(kd_by_hand(student, teacher, 2.0), rel=1e-6)


def test_known_value_two_classes():
    # T=1, teacher (0.5, 0.5), student logits (0, ln 3) -> p_s = (0.25, 0.75):
    # KL = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    loss = KDLoss(temperature=1.0)(Outputs(logits=torch.tensor([[0.0, math.log(3.0)]])),
                                   Outputs(logits=torch.zeros(1, 2)), Targets())
    assert loss.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)


def test_zero_when_student_equals_teacher():
    logits = torch.randn(4, 7)
    assert KDLoss(3.0)(Outputs(logits=logits), Outputs(logits=logits.clone()), Targets()).item() == pytest.approx(
        0.0, abs=1e-6)


def test_mask_drops_rows():
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    masked = KDLoss(2.0)(Outputs(logits=s), Outputs(logits=t), Targets(mask=torch.tensor([True, False, True])))
    kept = KDLoss(2.0)(Outputs(logits=s[[0, 2]]), Outputs(logits=t[[0, 2]]), Targets())
    assert masked.item() == pytest.approx(kept.item(), rel=1e-6)


def test_sequence_logits_average_over_positions():
    s, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    seq = KDLoss(1.0)(Outputs(logits=s), Outputs(logits=t), Targets())
    flat = KDLoss(1.0)(Outputs(logits=s.reshape(6, 5)), Outputs(logits=t.reshape(6, 5)), Targets())
    assert seq.item() == pytest.approx(flat.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_rejects_bad_temperature(bad):
    with pytest.raises(ValueError, match="'temperature' parameter of KDLoss must be > 0"):
        KDLoss(temperature=bad)


def test_rejects_mismatched_classes():
    expected = r"kd: student and teacher logits: shapes differ, \(2, 3\) vs \(2, 4\)"
    with pytest.raises(ShapeMismatchError, match=expected):
        KDLoss()(Outputs(logits=torch.randn(2, 3)), Outputs(logits=torch.randn(2, 4)), Targets())


def test_agreement_counts_the_positions_accuracy_counts():
    """Token tasks: `positions` keeps the data's `mask` (the scored positions), then the attention mask."""
    from kdforge.data.tensors import TensorData
    from kdforge.evaluate import positions

    logits = torch.zeros(1, 3, 2)
    logits[0, :, 1] = torch.tensor([1.0, -1.0, 1.0])  # argmax per position: 1, 0, 1
    both = TensorData({"attention_mask": torch.tensor([[1, 1, 0]]), "mask": torch.tensor([[False, True, False]])})
    assert positions(both)(logits).argmax(-1).tolist() == [0]
    assert positions(TensorData({"attention_mask": torch.tensor([[1, 1, 0]])}))(logits).argmax(-1).tolist() == [1, 0]
