"""Online distillation: deep mutual learning trains the peer in the same step, roles swapped."""

import json

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from kdforge.losses.base import Outputs, Targets, WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.losses.kd import KDLoss
from kdforge.models.builtin import MLP
from kdforge.train import checkpoint as ckpt
from kdforge.train.config import LoopConfig
from kdforge.train.loop import TrainJob, fit
from kdforge.train.mutual import MutualModule
from kdforge.types import TensorData


def test_each_network_learns_from_the_others_detached_outputs():
    torch.manual_seed(0)
    student = MLP(input_shape=(5,), num_classes=3, hidden=(8,))
    peer = MLP(input_shape=(5,), num_classes=3, hidden=(16,))
    loss = WeightedSum({"kd": KDLoss(1.0), "ce": CELoss()}, {"kd": 1.0, "ce": 1.0})
    module = MutualModule(student, peer, loss, ["x"])
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


def blobs(n=96, seed=0):
    """Three well-separated Gaussian blobs in 5-d."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = 3.0 * torch.eye(3, 5)
    return TensorData({"x": centres[labels] + 0.5 * torch.randn(n, 5, generator=g), "labels": labels})


def accuracy(model, data):
    with torch.no_grad():
        return (model(data.tensors["x"]).argmax(-1) == data.tensors["labels"]).float().mean().item()


def test_fit_trains_student_and_peer_in_one_loop(tmp_path):
    """The loop drives a MutualModule directly (no teacher source): both networks learn the task, the log holds
    the student's and the peer's terms, and the total is their sum; checkpoints hold the peer too."""
    torch.manual_seed(0)
    student = MLP(input_shape=(5,), num_classes=3, hidden=(8,))
    peer = MLP(input_shape=(5,), num_classes=3, hidden=(16,))
    peer_start = {k: v.clone() for k, v in peer.state_dict().items()}
    loss = WeightedSum({"kd": KDLoss(1.0), "ce": CELoss()}, {"kd": 1.0, "ce": 1.0})
    data = blobs()
    job = TrainJob("mutual", MutualModule(student, peer, loss, ["x"]), None, data,
                   LoopConfig(batch_size=16, lr=0.02, progress=False, checkpoint_every=10), 30, tmp_path)
    summary = fit(job, Accelerator())
    assert summary.steps == 30
    assert accuracy(student, data) > 0.9 and accuracy(peer, data) > 0.9
    assert any(not torch.equal(peer_start[k], v) for k, v in peer.state_dict().items())
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(records) == 30
    for r in records:
        assert {"train/kd", "train/ce", "train/peer_kd", "train/peer_ce", "train/peer_loss"} <= set(r)
        assert r["train/loss"] == pytest.approx(r["train/kd"] + r["train/ce"] + r["train/peer_loss"], rel=1e-5)
    saved = load_file(ckpt.latest_checkpoint(tmp_path / "checkpoints") / "module.safetensors")
    assert any(k.startswith("peer.") for k in saved) and any(k.startswith("student.") for k in saved)
