"""The training loop: exact resume, gradient accumulation, non-finite losses, checkpoint integrity."""

import dataclasses
import pickle

import pytest
import torch
from accelerate import Accelerator

from kdforge.data.tensors import TensorData
from kdforge.errors import TrainingError
from kdforge.losses.base import WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.losses.kd import KDLoss
from kdforge.models.builtin import MLP
from kdforge.train import checkpoint as ckpt
from kdforge.train.config import LoopConfig
from kdforge.train.loop import TrainJob, fit
from kdforge.train.module import DistillModule, OnlineTeacher


def data(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return TensorData({"x": x, "labels": (x[:, 0] > 0).long()})


def make_job(tmp_path, total_steps=12, dropout=0.3, **cfg):
    torch.manual_seed(1)
    teacher = MLP(input_shape=(6,), num_classes=2, hidden=(16,))
    student = MLP(input_shape=(6,), num_classes=2, hidden=(8,), dropout=dropout)
    loss = WeightedSum({"kd": KDLoss(2.0), "ce": CELoss()}, {"kd": 0.9, "ce": 0.1})
    config = LoopConfig(batch_size=8, lr=0.01, checkpoint_every=3, progress=False, scheduler="cosine", **cfg)
    return TrainJob("student", DistillModule(student, loss, ["x"]), OnlineTeacher(teacher, ["x"]), data(), config,
                    total_steps, tmp_path)


def weights(job):
    return {k: v.clone() for k, v in job.module.state_dict().items()}


def test_resume_after_a_crash_gives_identical_weights(tmp_path, monkeypatch):
    reference = make_job(tmp_path / "a")
    fit(reference, Accelerator())

    crashing = make_job(tmp_path / "b")
    calls = {"n": 0}
    original = WeightedSum.forward

    def crash_on_step_8(self, *args):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args)

    monkeypatch.setattr(WeightedSum, "forward", crash_on_step_8)
    with pytest.raises(KeyboardInterrupt):
        fit(crashing, Accelerator())
    monkeypatch.setattr(WeightedSum, "forward", original)
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text().strip() == "step-00000006"

    torch.manual_seed(123)  # a restarted process would not share the crashed one's RNG state
    resumed = make_job(tmp_path / "b")
    summary = fit(resumed, Accelerator(), resume=True)
    assert summary.steps == 12
    for key, value in weights(reference).items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key
    steps = [line for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert len(steps) == 12  # the log holds each step once, not the lost steps 7 twice


def test_gradient_accumulation_matches_a_large_batch(tmp_path):
    big = make_job(tmp_path / "big", dropout=0.0)
    fit(big, Accelerator())
    accumulated = make_job(tmp_path / "acc", dropout=0.0, grad_accum=2)
    accumulated.config = dataclasses.replace(accumulated.config, batch_size=4)
    fit(accumulated, Accelerator())
    for key, value in weights(big).items():
        assert torch.allclose(value, accumulated.module.state_dict()[key], atol=1e-5), key


def test_non_finite_loss_stops_with_step_and_term(tmp_path, monkeypatch):
    job = make_job(tmp_path)
    original = KDLoss.forward
    calls = {"n": 0}

    def nan_on_step_5(self, *args):
        calls["n"] += 1
        value = original(self, *args)
        return value * float("nan") if calls["n"] == 5 else value

    monkeypatch.setattr(KDLoss, "forward", nan_on_step_5)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 5 in term\(s\) kd.*step-00000003"):
        fit(job, Accelerator())


def test_select_best_restores_the_best_evaluation(tmp_path):
    job = make_job(tmp_path, select="best")
    scores = iter([0.5, 0.9, 0.1, 0.2])
    snapshots = {}

    def validate(student):
        snapshots[len(snapshots)] = {k: v.clone() for k, v in student.state_dict().items()}
        return {"val/accuracy": next(scores)}

    job.validate = validate
    job.config = dataclasses.replace(job.config, eval_every=3)
    summary = fit(job, Accelerator())
    assert summary.best_step == 6
    for key, value in snapshots[1].items():
        assert torch.equal(job.module.student.state_dict()[key], value)


def test_patience_stops_early(tmp_path):
    job = make_job(tmp_path, patience=2, eval_every=1)
    job.validate = lambda student: {"val/accuracy": 0.5}
    summary = fit(job, Accelerator())
    assert summary.stopped_early and summary.steps == 3


def test_corrupted_checkpoint_is_refused(tmp_path):
    job = make_job(tmp_path, total_steps=3)
    fit(job, Accelerator())
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    blob = bytearray((path / "module.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (path / "module.safetensors").write_bytes(bytes(blob))
    with pytest.raises(TrainingError, match="module.safetensors is missing or corrupted"):
        fit(make_job(tmp_path, total_steps=6), Accelerator(), resume=True)


def test_foreign_checkpoint_version_is_refused(tmp_path):
    job = make_job(tmp_path, total_steps=3)
    fit(job, Accelerator())
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    manifest = (path / "manifest.json").read_text().replace('"version": 1', '"version": 99')
    (path / "manifest.json").write_text(manifest)
    with pytest.raises(TrainingError, match="v99"):
        ckpt.verify_checkpoint(path)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_payload_in_a_checkpoint_is_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = make_job(tmp_path, total_steps=3)
    fit(job, Accelerator())
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    (path / "optim.pt").write_bytes(pickle.dumps({"optimizer": _Payload()}))
    # recompute the manifest so only the weights_only loader stands between the payload and execution
    import json

    from kdforge import io

    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["optim.pt"] = io.sha256_file(path / "optim.pt")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="pickle protocol"), pytest.raises(TrainingError, match="optim.pt holds"):
        fit(make_job(tmp_path, total_steps=6), Accelerator(), resume=True)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
