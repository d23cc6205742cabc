import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.at import ATLoss
from kdforge.losses.base import Outputs, Targets


def feats(**tensors):
    return Outputs(features=tensors)


def at_by_loops(s, t, p=2):
    """The authors' at(x) = normalize(x.pow(p).mean(1).view(B, -1)) and mean squared difference, with loops."""
    b, _, h, w = s.shape
    total = 0.0
    for n in range(b):
        maps = []
        for x in (s, t):
            a = [[x[n, :, i, j].abs().pow(p).mean().item() for j in range(w)] for i in range(h)]
            flat = [v for row in a for v in row]
            norm = sum(v * v for v in flat) ** 0.5
            maps.append([v / norm for v in flat])
        total += sum((u - v) ** 2 for u, v in zip(*maps, strict=True))
    return total / (b * h * w)


def test_zero_when_student_matches_teacher():
    x = torch.randn(2, 4, 5, 5)
    assert ATLoss(pairs=[("s", "t")])(feats(s=x), feats(t=x.clone()), Targets()).item() == pytest.approx(0.0,
                                                                                                          abs=1e-7)


def test_matches_hand_computation():
    s = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)  # attention map (1, 0)
    t = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)  # attention map (0, 1)
    # mean of (1-0)^2 and (0-1)^2 = 1
    assert ATLoss(pairs=[("s", "t")])(feats(s=s), feats(t=t), Targets()).item() == pytest.approx(1.0)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_matches_loops_with_different_channel_counts(p):
    s, t = torch.randn(2, 3, 3, 4), torch.randn(2, 7, 3, 4)
    value = ATLoss(pairs=[("s", "t")], p=p)(feats(s=s), feats(t=t), Targets()).item()
    assert value == pytest.approx(at_by_loops(s, t, p), rel=1e-5)


def test_pairs_are_averaged_and_layer_maps_expand():
    s1, s2, t1, t2 = (torch.randn(2, 3, 4, 4) for _ in range(4))
    both = ATLoss(pairs={"map": "uniform", "student": ["s1", "s2"], "teacher": ["t1", "t2"]})
    value = both(feats(s1=s1, s2=s2), feats(t1=t1, t2=t2), Targets()).item()
    assert value == pytest.approx((at_by_loops(s1, t1) + at_by_loops(s2, t2)) / 2, rel=1e-5)


def test_rejects_mismatched_spatial_size():
    with pytest.raises(ShapeMismatchError, match=r"at pair \('s', 't'\): student \(B, 4, 4, 4\) vs teacher "
                                                 r"\(B, 8, 2, 2\).*equal spatial size"):
        ATLoss(pairs=[("s", "t")])(feats(s=torch.randn(2, 4, 4, 4)), feats(t=torch.randn(2, 8, 2, 2)), Targets())


def test_rejects_vectors_and_bad_p():
    with pytest.raises(ShapeMismatchError, match="needs \\(B, C, H, W\\) maps"):
        ATLoss(pairs=[("s", "t")])(feats(s=torch.randn(2, 4)), feats(t=torch.randn(2, 4)), Targets())
    with pytest.raises(ValueError, match="'p' parameter of ATLoss must be > 0"):
        ATLoss(pairs=[("s", "t")], p=0)
