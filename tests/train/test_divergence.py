"""Divergence is said, not reported as a result; the "last good checkpoint" holds finite weights; model selection
breaks ties by validation loss, then by the later step (issue 16, items 5 and 7)."""

import dataclasses
import math

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from tests.train.test_loop import make_job

from kdforge.errors import TrainingError
from kdforge.train.divergence import detect_divergence, divergence_message
from kdforge.train.loop import fit
from kdforge.train.module import standard_step


def curve(losses, val=None):
    records = [{"step": i + 1, "train/loss": v} for i, v in enumerate(losses)]
    for i, acc in enumerate(val or []):
        records.append({"step": 10 * (i + 1), "val/accuracy": acc})
    return records


def test_a_loss_rising_by_orders_of_magnitude_is_divergence():
    found = detect_divergence(curve([1.1, 40.0, 3e4, 4e6, 4.4e6, 4.1e6]), num_classes=3)
    assert found.diverged and found.loss_ratio > 1e6
    message = divergence_message("student (seed 0)", found, "train", 1e6)
    assert "training diverged" in message and "train.lr (now 1e+06)" in message and "4.1e+06" in message


def test_a_healthy_or_noisy_run_is_not():
    assert not detect_divergence(curve([1.1, 0.9, 0.6, 0.4, 0.3, 0.35], [0.6, 0.8, 0.9]), 3).diverged
    assert not detect_divergence(curve([1.1, 1.3, 1.2, 1.0], [0.34, 0.35]), 3).diverged  # slow, not diverged
    assert not detect_divergence([], 3).diverged


def test_validation_collapsing_to_chance_is_divergence():
    found = detect_divergence(curve([1.0, 0.8, 0.9, 1.1], [0.7, 0.9, 0.34]), num_classes=3)
    assert found.diverged and "chance: 33.3%" in found.reasons[0] and found.last_val_accuracy == 0.34


def test_skipped_nonfinite_steps_name_a_checkpoint_with_finite_weights(tmp_path):
    """An update sends a weight to inf while the loss is still finite; every later loss is NaN. The error must
    not point at the checkpoint written after that update."""
    job = make_job(tmp_path, total_steps=12, nonfinite="skip", max_nonfinite=2, keep_checkpoints=20)
    job.config = dataclasses.replace(job.config, checkpoint_every=1)
    calls = {"n": 0}

    def poisoning_step(module, teacher, batch):
        terms = standard_step(module, teacher, batch)
        calls["n"] += 1
        if calls["n"] == 4:  # loss finite, but the weights this step leaves behind are not
            with torch.no_grad():
                module.student.head.bias.fill_(math.inf)
        return terms

    job.step_fn = poisoning_step
    with pytest.raises(TrainingError, match="Last good checkpoint") as info:
        fit(job, Accelerator())
    named = str(info.value).split("Last good checkpoint: ")[1].split(". ")[0]
    assert (tmp_path / "checkpoints" / "step-00000004").is_dir()  # the poisoned one exists, and is not named
    assert named.endswith("step-00000003")
    weights = load_file(f"{named}/module.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


@pytest.mark.parametrize("losses,kept", [([0.5, 0.4, 0.45, 0.3, 0.6], 4), ([0.5] * 5, 5)])
def test_select_best_breaks_ties_by_loss_then_the_later_step(tmp_path, losses, kept):
    job = make_job(tmp_path, total_steps=5, select="best", eval_every=1)
    scores = iter(losses)
    job.validate = lambda student: {"val/accuracy": 0.9, "val/loss": next(scores)}
    summary = fit(job, Accelerator())
    assert summary.best_step == kept
