import math

import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.pkd import PKDLoss


def feats(**tensors):
    return Outputs(features=tensors)


def unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def test_matches_hand_computation_on_cls_states():
    # [CLS] states (first token): student (3, 4) -> unit (0.6, 0.8); teacher (1, 0) -> unit (1, 0).
    s = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])  # (B=1, T=2, D=2)
    t = torch.tensor([[[1.0, 0.0], [5.0, -5.0]]])
    value = PKDLoss(pairs=[("s", "t")])(feats(s=s), feats(t=t), Targets()).item()
    assert value == pytest.approx((0.6 - 1.0) ** 2 + 0.8**2)  # = 2 - 2·cos = 0.8


def test_matches_cosine_form_on_vectors_and_conv_maps():
    s, t = torch.randn(3, 5), torch.randn(3, 5, 2, 2)
    value = PKDLoss(pairs=[("s", "t")])(feats(s=s), feats(t=t), Targets()).item()
    pooled = t.mean(dim=(2, 3))
    expected = 0.0
    for i in range(3):
        a, b = unit(s[i].tolist()), unit(pooled[i].tolist())
        expected += 2 - 2 * sum(x * y for x, y in zip(a, b, strict=True))
    assert value == pytest.approx(expected / 3, rel=1e-5)


def test_mean_pooling_respects_the_mask():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [100.0, -100.0]]])
    t = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])  # the padding token must not count
    value = PKDLoss(pairs=[("s", "t")], pool="mean")(feats(s=s), feats(t=t), Targets(mask=mask)).item()
    assert value == pytest.approx(0.0, abs=1e-6)


def test_skip_map_pairs_student_layers_with_every_other_teacher_layer():
    loss = PKDLoss(pairs={"map": "skip", "student": ["s1", "s2"], "teacher": ["t1", "t2", "t3", "t4", "t5", "t6"]})
    assert loss.pairs == [("s1", "t2"), ("s2", "t4")]
    x = torch.randn(2, 4)
    s = feats(s1=x, s2=-x)
    t = feats(t1=x, t2=x * 3, t3=x, t4=x, t5=x, t6=x)  # t2 matches s1 after normalisation; s2 is opposite t4
    assert loss(s, t, Targets()).item() == pytest.approx((0.0 + 4.0) / 2, abs=1e-5)


def test_degenerate_scale_invariance():
    x = torch.randn(4, 8)
    assert PKDLoss(pairs=[("s", "t")])(feats(s=x), feats(t=7.5 * x), Targets()).item() == pytest.approx(0.0, abs=1e-6)


def test_width_mismatch_suggests_a_projector_and_projector_fixes_it():
    s, t = torch.randn(2, 6), torch.randn(2, 4)
    with pytest.raises(ShapeMismatchError, match=r"pkd pair \('s', 't'\).*Add `projector: linear`"):
        PKDLoss(pairs=[("s", "t")])(feats(s=s), feats(t=t), Targets())
    assert PKDLoss(pairs=[("s", "t")], projector="linear")(feats(s=s), feats(t=t), Targets()).dim() == 0
    with pytest.raises(ValueError, match="'pool' parameter of PKDLoss"):
        PKDLoss(pairs=[("s", "t")], pool="max")
