import pytest
import torch
import torch.nn.functional as F

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.rocket import RocketLoss
from kdforge.models.builtin import RocketMLP


def test_matches_hand_computation():
    light = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    booster = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1])
    value = RocketLoss("b", hint_weight=0.5)(Outputs(logits=light, features={"b": booster}), Outputs(),
                                              Targets(labels=labels))
    # CE(booster): row 0 -log(1/2), row 1 -log(1/2); hint: squared errors 1, 0, 1, 1 -> mean 0.75
    assert value.item() == pytest.approx(F.cross_entropy(booster, labels).item() + 0.5 * 0.75)


def test_gradient_block_keeps_the_hint_from_pulling_the_booster():
    light = torch.randn(4, 3, requires_grad=True)
    booster = torch.randn(4, 3, requires_grad=True)
    unlabelled = Targets(labels=torch.full((4,), -100))
    RocketLoss("b")(Outputs(logits=light, features={"b": booster}), Outputs(), unlabelled).backward()
    assert light.grad.abs().sum() > 0 and booster.grad.abs().sum() == 0


def test_booster_runs_only_in_training_and_shares_the_trunk():
    model = RocketMLP(input_shape=(6,), num_classes=3, trunk=(8,), booster=(16,))
    seen = []
    model.booster.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    model.train()(torch.randn(2, 6))
    model.eval()(torch.randn(2, 6))
    assert seen == [torch.Size([2, 3])]
    assert model.booster.blocks[0][0].in_features == 8  # the booster sits on the shared trunk


def test_mismatched_booster_tap():
    with pytest.raises(ShapeMismatchError, match="rocket: light logits and booster tap 'b'"):
        RocketLoss("b")(Outputs(logits=torch.randn(2, 3), features={"b": torch.randn(2, 5)}), Outputs(), Targets())
