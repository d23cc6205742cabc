import math

import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.sp import SPLoss


def feats(**tensors):
    return Outputs(features=tensors)


def sp_by_loops(s, t):
    """Tung & Mori Eq. (2)-(4): G = Q Q^T, rows L2-normalised, squared Frobenius distance / b², with loops."""
    b = len(s)

    def gram(q):
        g = [[sum(x * y for x, y in zip(q[i], q[j], strict=True)) for j in range(b)] for i in range(b)]
        return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in g]

    gs, gt = gram(s), gram(t)
    return sum((gs[i][j] - gt[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def test_matches_loops_across_shapes():
    s, t = torch.randn(4, 2, 3, 3), torch.randn(4, 10)
    value = SPLoss(pairs=[("s", "t")])(feats(s=s), feats(t=t), Targets()).item()
    assert value == pytest.approx(sp_by_loops(s.flatten(1).tolist(), t.tolist()), rel=1e-5)


def test_hand_value_for_orthogonal_versus_parallel_samples():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # G_s = I
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # G_t = all ones, rows normalised to 1/sqrt(2)
    r = 1 / math.sqrt(2)
    expected = (2 * (1 - r) ** 2 + 2 * r**2) / 4
    assert SPLoss(pairs=[("s", "t")])(feats(s=s), feats(t=t), Targets()).item() == pytest.approx(expected, rel=1e-6)


def test_degenerate_invariant_to_feature_scale_and_orthogonal_maps():
    s = torch.randn(5, 6)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6))
    value = SPLoss(pairs=[("s", "t")])(feats(s=s), feats(t=2.0 * s @ rotation), Targets()).item()
    assert value == pytest.approx(0.0, abs=1e-6)


def test_rejects_different_batch_sizes():
    with pytest.raises(ShapeMismatchError, match=r"sp pair \('s', 't'\).*same batch"):
        SPLoss(pairs=[("s", "t")])(feats(s=torch.randn(3, 4)), feats(t=torch.randn(4, 4)), Targets())
