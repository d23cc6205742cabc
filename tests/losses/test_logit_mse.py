import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.logit_mse import LogitMSELoss


def test_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    # squared errors 1, 4, 1, 9 -> mean 3.75
    assert LogitMSELoss()(Outputs(logits=s), Outputs(logits=t), Targets()).item() == pytest.approx(3.75)


def test_agrees_with_torch_mse():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    expected = torch.nn.functional.mse_loss(s, t)
    assert LogitMSELoss()(Outputs(logits=s), Outputs(logits=t), Targets()).item() == pytest.approx(expected.item())


def test_rejects_mismatched_shapes():
    with pytest.raises(ShapeMismatchError, match="logit_mse"):
        LogitMSELoss()(Outputs(logits=torch.randn(2, 3)), Outputs(logits=torch.randn(2, 5)), Targets())
