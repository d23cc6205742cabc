import math

import pytest
import torch

from kdforge.losses.base import IGNORE_INDEX, Outputs, Targets
from kdforge.losses.ce import CELoss


def test_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 2])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(1 / (math.e + 2))) / 2
    assert CELoss()(Outputs(logits=logits), Outputs(), Targets(labels=labels)).item() == pytest.approx(expected)


def test_unlabelled_rows_do_not_count():
    logits = torch.randn(3, 4)
    labels = torch.tensor([1, IGNORE_INDEX, 3])
    full = CELoss()(Outputs(logits=logits), Outputs(), Targets(labels=labels))
    kept = CELoss()(Outputs(logits=logits[[0, 2]]), Outputs(), Targets(labels=labels[[0, 2]]))
    assert full.item() == pytest.approx(kept.item())


def test_all_unlabelled_gives_zero_with_a_graph():
    logits = torch.randn(2, 4, requires_grad=True)
    loss = CELoss()(Outputs(logits=logits), Outputs(), Targets(labels=torch.full((2,), IGNORE_INDEX)))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_needs_labels():
    with pytest.raises(ValueError, match="CELoss needs labels"):
        CELoss()(Outputs(logits=torch.randn(2, 3)), Outputs(), Targets())


def test_rejects_bad_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        CELoss(label_smoothing=1.5)
