import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.ab import ABLoss
from kdforge.losses.base import Outputs, Targets


def feats(**tensors):
    return Outputs(features=tensors)


def ab_by_hand(s_values, t_values, margin):
    """Eq. (5) element by element, with explicit branches."""
    total = 0.0
    for s, t in zip(s_values, t_values, strict=True):
        if t > 0 and s < margin:
            total += (s - margin) ** 2
        elif t <= 0 and s > -margin:
            total += (s + margin) ** 2
    return total / len(s_values)


def test_matches_hand_computation_without_connector():
    s = [2.0, 0.5, -0.3, -3.0, 0.0, 1.5]
    t = [1.0, 1.0, -1.0, -0.5, 0.0, -2.0]
    loss = ABLoss(pairs=[("s", "t")], margin=1.0, projector="none")
    value = loss(feats(s=torch.tensor([s])), feats(t=torch.tensor([t])), Targets()).item()
    # by hand: 0, (0.5-1)^2=0.25, (-0.3+1)^2=0.49, 0, (0+1)^2=1, (1.5+1)^2=6.25 -> 7.99 / 6
    assert value == pytest.approx(7.99 / 6)
    assert value == pytest.approx(ab_by_hand(s, t, 1.0))


def test_degenerate_zero_when_student_is_beyond_the_margin_on_the_teachers_side():
    t = torch.randn(3, 4, 2, 2)
    s = torch.where(t > 0, torch.full_like(t, 2.0), torch.full_like(t, -2.0))
    assert ABLoss(pairs=[("s", "t")], margin=1.0, projector="none")(feats(s=s), feats(t=t), Targets()).item() == 0.0


def test_connector_is_conv_plus_batchnorm_applied_before_the_boundary_loss():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3, 2, 2), torch.randn(4, 6, 2, 2)
    loss = ABLoss(pairs=[("s", "t")], margin=0.5).eval()
    loss(feats(s=s), feats(t=t), Targets())  # builds the connector
    connector = loss.connectors[0]
    assert isinstance(connector.layer, torch.nn.Conv2d) and connector.layer.bias is None
    assert isinstance(connector.norm, torch.nn.BatchNorm2d)
    mapped = connector.norm(connector.layer(s))
    expected = ab_by_hand(mapped.flatten().tolist(), t.flatten().tolist(), 0.5)
    assert loss(feats(s=s), feats(t=t), Targets()).item() == pytest.approx(expected, rel=1e-5)


def test_rejects_bad_margin_and_mismatched_shapes():
    with pytest.raises(ValueError, match="'margin' parameter of ABLoss must be > 0"):
        ABLoss(pairs=[("s", "t")], margin=0.0)
    with pytest.raises(ShapeMismatchError, match=r"ab pair \('s', 't'\)"):
        ABLoss(pairs=[("s", "t")], projector="none")(feats(s=torch.randn(2, 3)), feats(t=torch.randn(2, 4)),
                                                     Targets())
