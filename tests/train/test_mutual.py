"""Online distillation: deep mutual learning trains the peer in the same step, roles swapped."""

import pytest
import torch

from kdforge.losses.base import Outputs, Targets, WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.losses.kd import KDLoss
from kdforge.models.builtin import MLP
from kdforge.train.module import DistillModule


def test_each_network_learns_from_the_others_detached_outputs():
    torch.manual_seed(0)
    student = MLP(input_shape=(5,), num_classes=3, hidden=(8,))
    peer = MLP(input_shape=(5,), num_classes=3, hidden=(16,))
    loss = WeightedSum({"kd": KDLoss(1.0), "ce": CELoss()}, {"kd": 1.0, "ce": 1.0})
    module = DistillModule(student, loss, ["x"], peer=peer)
    batch = {"x": torch.randn(6, 5), "labels": torch.randint(0, 3, (6,))}
    terms = module(batch, Outputs())
    s, p = student(batch["x"]), peer(batch["x"])
    targets = Targets(labels=batch["labels"])
    expected_student = KDLoss(1.0)(Outputs(logits=s), Outputs(logits=p), targets) + CELoss()(Outputs(logits=s),
                                                                                            Outputs(), targets)
    expected_peer = KDLoss(1.0)(Outputs(logits=p), Outputs(logits=s), targets) + CELoss()(Outputs(logits=p),
                                                                                         Outputs(), targets)
    assert terms["loss"].item() == pytest.approx((expected_student + expected_peer).item(), rel=1e-6)
    assert {"peer_kd", "peer_ce", "kd", "ce"} <= set(terms)
    # the student's KD term sends no gradient into the peer, and vice versa
    terms["kd"].backward(retain_graph=True)
    assert all(p.grad is None for p in peer.parameters())
    assert any(p.grad is not None for p in student.parameters())
    student.zero_grad()
    terms["peer_kd"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in student.parameters())
