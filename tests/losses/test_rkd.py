import itertools
import math

import pytest
import torch

from kdforge.losses.base import Outputs, Targets
from kdforge.losses.rkd import RKDLoss


def feats(**tensors):
    return Outputs(features=tensors)


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def rkd_by_loops(s, t, wd, wa):
    """Park et al. Eq. (4)-(7) with explicit loops over pairs and triplets."""
    b = len(s)

    def dist(e, i, j):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(e[i], e[j], strict=True)))

    def normalised_distances(e):
        d = {(i, j): dist(e, i, j) for i in range(b) for j in range(b)}
        mu = sum(v for (i, j), v in d.items() if i != j) / (b * (b - 1))
        return {k: v / mu for k, v in d.items()}

    ds, dt = normalised_distances(s), normalised_distances(t)
    distance = sum(huber(ds[k], dt[k]) for k in ds) / b**2

    def cos(e, i, j, k):
        u = [x - y for x, y in zip(e[i], e[j], strict=True)]
        v = [x - y for x, y in zip(e[k], e[j], strict=True)]
        nu, nv = math.sqrt(sum(x * x for x in u)), math.sqrt(sum(x * x for x in v))
        if nu == 0 or nv == 0:
            return 0.0
        return sum(x * y for x, y in zip(u, v, strict=True)) / (nu * nv)

    angle = sum(huber(cos(s, i, j, k), cos(t, i, j, k)) for i, j, k in itertools.product(range(b), repeat=3)) / b**3
    return wd * distance + wa * angle


def test_matches_loops():
    torch.manual_seed(1)
    s, t = torch.randn(5, 3), torch.randn(5, 7) * 4  # different widths and scales are fine
    value = RKDLoss(pairs=[("s", "t")], distance_weight=25.0, angle_weight=50.0)(feats(s=s), feats(t=t), Targets())
    assert value.item() == pytest.approx(rkd_by_loops(s.tolist(), t.tolist(), 25.0, 50.0), rel=1e-4)


def test_each_term_alone():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    for wd, wa in ((1.0, 0.0), (0.0, 1.0)):
        value = RKDLoss(pairs=[("s", "t")], distance_weight=wd, angle_weight=wa)(feats(s=s), feats(t=t), Targets())
        assert value.item() == pytest.approx(rkd_by_loops(s.tolist(), t.tolist(), wd, wa), rel=1e-4)


def test_degenerate_invariant_to_scale_rotation_and_translation():
    s = torch.randn(6, 4)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4))
    t = 3.0 * s @ rotation + 1.0
    value = RKDLoss(pairs=[("s", "t")])(feats(s=s), feats(t=t), Targets()).item()
    assert value == pytest.approx(0.0, abs=1e-6)


def test_gradients_are_finite_with_duplicate_samples_and_batch_of_one():
    s = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    RKDLoss(pairs=[("s", "t")])(feats(s=s), feats(t=torch.randn(3, 5)), Targets()).backward()
    assert torch.isfinite(s.grad).all()
    one = RKDLoss(pairs=[("s", "t")])(feats(s=torch.randn(1, 3)), feats(t=torch.randn(1, 3)), Targets())
    assert one.item() == 0.0


def test_rejects_both_weights_zero():
    with pytest.raises(ValueError, match="distance_weight and angle_weight are both 0"):
        RKDLoss(pairs=[("s", "t")], distance_weight=0.0, angle_weight=0.0)
