"""Checkpoints by time and by events: how many a run writes, SIGINT mid-run, the log cut at the checkpoint."""

import dataclasses
import json
import os
import signal

import pytest
import torch
from accelerate import Accelerator
from tests.train.test_loop import make_job, weights

from kdforge.losses.base import WeightedSum
from kdforge.train import checkpoint as ckpt
from kdforge.train import loop
from kdforge.train.loop import fit


class FakeClock:
    """Advances `minutes` per reading; the loop reads it once per step (and restarts the interval after a checkpoint
    with one more reading, which here stands for the checkpoint's own minute)."""

    def __init__(self, minutes: float) -> None:
        self.now, self.step = 0.0, minutes * 60.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def saved_steps(monkeypatch) -> list[int]:
    steps: list[int] = []
    original = loop.save_checkpoint

    def counting(folder, module, optimizer, scheduler, state, *args, **kwargs):
        steps.append(state.step)
        return original(folder, module, optimizer, scheduler, state, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", counting)
    return steps


def job_with(tmp_path, total_steps, **cfg):
    job = make_job(tmp_path, total_steps=total_steps)
    job.config = dataclasses.replace(job.config, **{"checkpoint_every": None, **cfg})
    return job


def test_default_writes_one_checkpoint_at_the_end_not_one_per_epoch(tmp_path, monkeypatch):
    steps = saved_steps(monkeypatch)
    fit(job_with(tmp_path, 25), Accelerator())  # 5 steps an epoch, 5 epochs, well under 10 minutes
    assert steps == [25]


def test_checkpoint_count_follows_the_wall_clock_interval(tmp_path, monkeypatch):
    steps = saved_steps(monkeypatch)
    monkeypatch.setattr(loop, "_clock", FakeClock(minutes=1.0))  # one "minute" per step
    fit(job_with(tmp_path, 22, checkpoint_minutes=4.0), Accelerator())
    # 22 steps of one minute each, a 4-minute interval: a checkpoint every 4 steps, and one at the end
    assert steps == [4, 8, 12, 16, 20, 22]


def test_step_interval_without_a_time_interval(tmp_path, monkeypatch):
    steps = saved_steps(monkeypatch)
    fit(job_with(tmp_path, 12, checkpoint_every=5, checkpoint_minutes=None), Accelerator())
    assert steps == [5, 10, 12]


def test_early_stop_writes_a_checkpoint_first(tmp_path, monkeypatch):
    steps = saved_steps(monkeypatch)
    job = job_with(tmp_path, 40, eval_every=2, patience=1, select="best")
    values = iter([0.5, 0.4] + [0.1] * 30)
    job.validate = lambda student: {"val/accuracy": next(values)}
    summary = fit(job, Accelerator())
    assert summary.stopped_early and summary.steps == 4 and steps == [4]
    assert (ckpt.latest_checkpoint(tmp_path / "checkpoints") / "best.safetensors").is_file()


def test_sigint_checkpoints_the_step_then_interrupts_and_resume_is_exact(tmp_path, monkeypatch):
    reference = job_with(tmp_path / "a", 12)
    fit(reference, Accelerator())

    interrupted = job_with(tmp_path / "b", 12)
    calls = {"n": 0}
    original = WeightedSum.forward

    def signal_on_step_7(self, *args):
        calls["n"] += 1
        if calls["n"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step; the step finishes first
        return original(self, *args)

    monkeypatch.setattr(WeightedSum, "forward", signal_on_step_7)
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, Accelerator())
    monkeypatch.setattr(WeightedSum, "forward", original)
    assert ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step-00000007"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    torch.manual_seed(123)
    resumed = job_with(tmp_path / "b", 12)
    assert fit(resumed, Accelerator(), resume=True).steps == 12
    for key, value in weights(reference).items():
        assert torch.equal(value, resumed.module.state_dict()[key]), key


def test_resumed_log_is_cut_at_the_checkpoint_byte_offset_and_appended(tmp_path):
    fit(job_with(tmp_path, 6), Accelerator())  # the first half of a 12-step run, checkpointed at its end
    first_half = (tmp_path / "log.jsonl").read_bytes()
    state = json.loads((tmp_path / "checkpoints" / "step-00000006" / "state.json").read_text())["loop"]
    assert state["log_bytes"] == len(first_half)
    (tmp_path / "log.jsonl").write_bytes(first_half + b'{"step": 7, "lost": true}\n')  # a killed run's extra line
    fit(job_with(tmp_path, 12), Accelerator(), resume=True)
    log = (tmp_path / "log.jsonl").read_bytes()
    assert log.startswith(first_half)  # appended, not rewritten
    lines = [json.loads(line) for line in log.decode().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13)) and not any("lost" in r for r in lines)
