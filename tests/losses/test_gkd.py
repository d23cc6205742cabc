"""GKD: the lmbda mix of fixed and student-generated sequences, and the registered step."""

import pytest
import torch

from kdforge.app.build import build_loss
from kdforge.llm.data import encode, tiny_causal_lm, train_tokenizer
from kdforge.losses import LOSSES
from kdforge.losses.gkd import GKDLoss, on_policy_step, student_rollouts
from kdforge.recipe import LossTerm
from kdforge.train.module import DistillModule, OnlineTeacher, standard_step

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Return the list of names in this module.",
         "A tiny corpus is enough for a tokenizer test."]
INPUTS = ["input_ids", "attention_mask"]


@pytest.fixture(scope="module")
def setup():
    data = encode(TEXTS * 2, train_tokenizer(TEXTS, 280), seq_len=20)
    student = tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=280, seed=0)
    teacher = tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=280, seed=1)
    return data, student, teacher


def test_on_policy_steps_follow_lmbda_and_the_seed():
    steps = range(2000)
    mix = [GKDLoss(lmbda=0.3, seed=5).on_policy(s) for s in steps]
    assert abs(sum(mix) / len(mix) - 0.3) < 0.04
    assert mix == [GKDLoss(lmbda=0.3, seed=5).on_policy(s) for s in steps]
    assert not any(GKDLoss(lmbda=0.0).on_policy(s) for s in steps)
    assert all(GKDLoss(lmbda=1.0).on_policy(s) for s in steps)


def test_rollouts_keep_the_prompt_and_count_only_generated_tokens(setup):
    data, student, _ = setup
    batch = data[slice(0, 6)]
    first = student_rollouts(student, batch, prompt_len=3, temperature=1.0, seed=11)
    again = student_rollouts(student, batch, prompt_len=3, temperature=1.0, seed=11)
    assert torch.equal(first["input_ids"], again["input_ids"])
    assert torch.equal(first["input_ids"][:, :3], batch["input_ids"][:, :3])
    assert not torch.equal(first["input_ids"], batch["input_ids"])
    assert (first["labels"][:, :2] == -100).all() and torch.equal(first["labels"][:, 2], first["input_ids"][:, 3])
    assert torch.equal(first["index"], batch["index"]) and torch.equal(first["mask"], first["labels"] != -100)


class Recording(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, **kwargs):
        self.seen.append(kwargs["input_ids"].clone())
        return self.model(**kwargs)


@pytest.mark.parametrize("lmbda", [0.0, 1.0])
def test_step_scores_student_rollouts_with_the_teacher_only_when_on_policy(setup, lmbda):
    data, student, teacher = setup
    module = DistillModule(student, build_loss([LossTerm(name="gkd", lmbda=lmbda, prompt_len=3)]), INPUTS, {})
    module.eval()  # no dropout: the two steps below are comparable
    recording = Recording(teacher)
    online = OnlineTeacher(recording, INPUTS, {})
    batch = data[slice(0, 6)]
    terms = on_policy_step(standard_step)(module, online, batch)
    assert torch.isfinite(terms["loss"]) and "gkd" in terms
    assert torch.equal(recording.seen[-1], batch["input_ids"]) == (lmbda == 0.0)
    if lmbda == 0.0:
        assert torch.equal(terms["loss"], standard_step(module, online, batch)["loss"])
    else:
        rollout = student_rollouts(student, batch, 3, 1.0, seed=0)
        assert torch.equal(recording.seen[-1], rollout["input_ids"])
    assert LOSSES.info("gkd").step is on_policy_step


def test_bad_arguments():
    with pytest.raises(ValueError, match="lmbda"):
        GKDLoss(lmbda=2.0)
    with pytest.raises(ValueError, match="prompt_len"):
        GKDLoss(prompt_len=0)
