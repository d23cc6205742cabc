import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.fitnet import FitNetLoss


def feats(**tensors):
    return Outputs(features=tensors)


def test_matches_a_loop_over_pixels_with_the_learned_regressor():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 5, 2, 2)
    loss = FitNetLoss(pairs=[("s", "t")])
    value = loss(feats(s=s), feats(t=t), Targets()).item()
    conv = loss.projectors[0].layer  # the 1x1 conv built from the first batch: (5, 3, 1, 1)
    w, b = conv.weight[:, :, 0, 0], conv.bias
    total, count = 0.0, 0
    for n in range(2):
        for i in range(2):
            for j in range(2):
                projected = w @ s[n, :, i, j] + b  # (5,)
                total += ((projected - t[n, :, i, j]) ** 2).sum().item()
                count += 5
    assert value == pytest.approx(total / count, rel=1e-5)


def test_vectors_get_a_linear_regressor_and_pairs_are_averaged():
    s, t = torch.randn(4, 6), torch.randn(4, 3)
    loss = FitNetLoss(pairs=[("s", "t"), ("s", "t2")])
    value = loss(feats(s=s), feats(t=t, t2=t * 2), Targets())
    lin = loss.projectors[0].layer
    assert isinstance(lin, torch.nn.Linear) and lin.weight.shape == (3, 6)
    first = ((s @ lin.weight.T + lin.bias - t) ** 2).mean()
    second = ((loss.projectors[1](s) - 2 * t) ** 2).mean()
    assert value.item() == pytest.approx(((first + second) / 2).item(), rel=1e-5)


def test_without_projector_is_plain_mse_and_zero_at_match():
    x = torch.randn(2, 4, 3, 3)
    assert FitNetLoss(pairs=[("s", "t")], projector="none")(feats(s=x), feats(t=x.clone()), Targets()).item() == 0.0
    hand = ((x - 1.0) ** 2).mean().item()
    loss = FitNetLoss(pairs=[("s", "t")], projector="none")(feats(s=x), feats(t=torch.ones_like(x)), Targets())
    assert loss.item() == pytest.approx(hand, rel=1e-6)


def test_regressor_trains_and_lives_in_the_loss_state():
    s, t = torch.randn(8, 3, 2, 2), torch.randn(8, 5, 2, 2)
    loss = FitNetLoss(pairs=[("s", "t")])
    loss(feats(s=s), feats(t=t), Targets())
    assert {"projectors.0.layer.weight", "projectors.0.layer.bias"} <= set(loss.state_dict())
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.05)
    first = loss(feats(s=s), feats(t=t), Targets()).item()
    for _ in range(50):
        optimizer.zero_grad()
        loss(feats(s=s), feats(t=t), Targets()).backward()
        optimizer.step()
    assert loss(feats(s=s), feats(t=t), Targets()).item() < first


def test_channel_mismatch_without_projector_names_taps_shapes_and_fix():
    with pytest.raises(ShapeMismatchError, match=r"fitnet pair \('s3', 't3'\).*\(2, 128, 8, 8\) vs \(2, 256, 8, 8\)"
                                                 r".*Add `projector: conv1x1`"):
        FitNetLoss(pairs=[("s3", "t3")], projector="none")(feats(s3=torch.randn(2, 128, 8, 8)),
                                                           feats(t3=torch.randn(2, 256, 8, 8)), Targets())


def test_spatial_mismatch_with_projector_says_a_1x1_map_keeps_the_size():
    with pytest.raises(ShapeMismatchError, match=r"fitnet pair \('s', 't'\).*same H x W"):
        FitNetLoss(pairs=[("s", "t")])(feats(s=torch.randn(2, 4, 8, 8)), feats(t=torch.randn(2, 4, 4, 4)),
                                       Targets())


def test_bad_arguments():
    with pytest.raises(ValueError, match="'projector' parameter of FitNetLoss must be one of"):
        FitNetLoss(pairs=[("s", "t")], projector="conv3x3")
    with pytest.raises(ValueError, match="FitNetLoss needs at least one"):
        FitNetLoss(pairs=[])
