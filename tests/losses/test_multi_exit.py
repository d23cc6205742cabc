import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses.base import Outputs, Targets
from kdforge.losses.early_exit import EarlyExit, early_exit_curve, normalized_entropy
from kdforge.losses.multi_exit import MultiExitLoss
from kdforge.models.builtin import MLP
from kdforge.types import TensorData


def test_matches_an_independent_computation():
    torch.manual_seed(0)
    loss = MultiExitLoss(exits=["a", "b"], alpha=0.25, temperature=2.0)
    feats = {"a": torch.randn(4, 5), "b": torch.randn(4, 6, 2, 2)}
    final = torch.randn(4, 3)
    labels = torch.tensor([0, 2, -100, 1])
    value = loss(Outputs(logits=final, features=feats), Outputs(), Targets(labels=labels))
    # recompute by hand with the same heads
    expected = 0.0
    for head, feat in zip(loss.heads, [feats["a"], feats["b"].flatten(1)], strict=True):  # 2x2 maps stay whole
        e = head.classifier(feat)
        p_t = F.softmax(final / 2, -1)
        kl = (p_t * (p_t.log() - F.log_softmax(e / 2, -1))).sum(-1).mean()
        keep = labels != -100
        ce = -F.log_softmax(e[keep], -1)[torch.arange(3), labels[keep]].mean()
        expected += 0.25 * 4 * kl + 0.75 * ce
    assert value.item() == pytest.approx(expected.item() / 2, rel=1e-5)


def test_final_logits_are_the_teacher_and_get_no_gradient():
    loss = MultiExitLoss(exits=["a"])
    final = torch.randn(4, 3, requires_grad=True)
    feat = torch.randn(4, 5, requires_grad=True)
    loss(Outputs(logits=final, features={"a": feat}), Outputs(), Targets()).backward()
    assert final.grad is None and feat.grad is not None


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one exit"):
        MultiExitLoss(exits=[])
    with pytest.raises(ValueError, match="'alpha' parameter of MultiExitLoss"):
        MultiExitLoss(exits=["a"], alpha=2.0)


def test_early_exit_really_skips_layers_and_threshold_trades_depth():
    torch.manual_seed(0)
    student = MLP(input_shape=(4,), num_classes=3, hidden=(8, 8)).eval()
    loss = MultiExitLoss(exits=["h0"])
    x = torch.randn(20, 4)
    loss(Outputs(logits=student(x), features={"h0": student.blocks[0](x)}), Outputs(), Targets())
    with torch.no_grad():
        exit_logits, full_logits = loss.heads[0](student.blocks[0](x[:1])), student(x[:1])
    calls = {"n": 0}
    student.blocks[1].register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    runner = EarlyExit(student, ["blocks.0"], loss.heads, ["x"])
    logits, index = runner.predict({"x": x[:1]}, threshold=1.01)  # everything is confident enough
    assert index == 0 and calls["n"] == 0 and torch.allclose(logits, exit_logits)
    logits, index = runner.predict({"x": x[:1]}, threshold=0.0)  # nothing is: the full network runs
    assert index == 1 and calls["n"] == 1 and torch.allclose(logits, full_logits)
    data = TensorData({"x": x, "labels": torch.randint(0, 3, (20,))})
    curve = early_exit_curve(runner, data, [0.5, 1.01])
    assert [p["threshold"] for p in curve] == [0.0, 0.5, 1.01]
    assert curve[0]["mean_exit"] == 1.0 and curve[-1]["mean_exit"] == 0.0


def test_normalized_entropy_bounds():
    assert normalized_entropy(torch.zeros(1, 4)).item() == pytest.approx(1.0)
    assert normalized_entropy(torch.tensor([[100.0, 0.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)
    assert math.isclose(normalized_entropy(torch.tensor([[0.0, 0.0]])).item(), 1.0, rel_tol=1e-6)
