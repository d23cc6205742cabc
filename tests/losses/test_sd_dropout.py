import math

import pytest
import torch

from kdforge.losses.base import Outputs, Targets, WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.losses.sd_dropout import SDDropoutLoss
from kdforge.models.builtin import MLP
from kdforge.train.module import DistillModule
from kdforge.train.schedule import TermSchedule


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_matches_hand_computation():
    u, v = [1.0, 0.0, -1.0], [0.0, 0.5, 0.0]
    loss = SDDropoutLoss(temperature=2.0)(
        Outputs(logits=torch.tensor([u]), views=[torch.tensor([v])]), Outputs(), Targets())
    pu, pv = softmax([x / 2 for x in u]), softmax([x / 2 for x in v])
    assert loss.item() == pytest.approx(4 * (kl(pu, pv) + kl(pv, pu)), rel=1e-6)


def test_needs_a_view():
    with pytest.raises(ValueError, match="second dropout view"):
        SDDropoutLoss()(Outputs(logits=torch.randn(2, 3)), Outputs(), Targets())


def test_module_supplies_a_different_dropout_view_only_when_the_term_is_active():
    torch.manual_seed(0)
    student = MLP(input_shape=(6,), num_classes=3, hidden=(32,), dropout=0.5)
    terms = {"sd_dropout": SDDropoutLoss(), "ce": CELoss()}
    loss = WeightedSum(terms, {"sd_dropout": 1.0, "ce": 1.0})
    schedule = TermSchedule(terms, windows={"sd_dropout": (0, 2), "ce": (0, None)})
    module = DistillModule(student, loss, ["x"]).train()
    schedule.select(loss, 0)
    batch = {"x": torch.randn(8, 6), "labels": torch.randint(0, 3, (8,))}
    outputs = module._student_outputs(batch)
    assert len(outputs.views) == 1 and not torch.equal(outputs.views[0], outputs.logits)
    assert module(batch, Outputs())["sd_dropout"].item() > 0
    schedule.select(loss, 2)
    assert module._student_outputs(batch).views == []


def test_only_labelled_rows_count_by_default():
    z, w = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, -100, 2, -100])
    mixed = SDDropoutLoss()(Outputs(logits=z, views=[w]), Outputs(), Targets(labels=labels))
    labelled = SDDropoutLoss()(Outputs(logits=z[[0, 2]], views=[w[[0, 2]]]), Outputs(), Targets())
    every = SDDropoutLoss(rows="all")(Outputs(logits=z, views=[w]), Outputs(), Targets(labels=labels))
    assert mixed.item() == pytest.approx(labelled.item())
    assert every.item() == pytest.approx(SDDropoutLoss()(Outputs(logits=z, views=[w]), Outputs(), Targets()).item())
    with pytest.raises(ValueError, match="'rows' parameter"):
        SDDropoutLoss(rows="some")
