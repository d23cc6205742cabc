"""Positions are aligned by construction (labels shifted once, in kdforge.lm.rows), and a teacher whose logits
are one position off is caught by the preflight."""

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from kdforge.app.build import build_loss
from kdforge.app.preflight import preflight
from kdforge.errors import ShapeMismatchError
from kdforge.llm.data import encode, tiny_causal_lm, train_tokenizer
from kdforge.llm.positions import alignment_problem
from kdforge.losses.sparse import TopK
from kdforge.recipe import LossTerm
from kdforge.train.module import DistillModule, OnlineTeacher

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Return the list of names in this module.",
         "A tiny corpus is enough for a tokenizer test.", "Every position predicts the token after it."] * 3
INPUTS = ["input_ids", "attention_mask"]
VOCAB = 300
SRC = Path(__file__).resolve().parents[2] / "src" / "kdforge"


class Oracle(nn.Module):
    """A teacher that reads the whole row: position t's logits peak on ids[t + lead] (lead 1: the next token,
    aligned; 2: one position ahead; 0: one behind, the current token)."""

    def __init__(self, lead: int):
        super().__init__()
        self.lead = lead
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for the preflight

    def forward(self, input_ids, attention_mask=None):
        target = torch.roll(input_ids, -self.lead, dims=1)
        return nn.functional.one_hot(target, VOCAB).float() * 8.0 + self.anchor


def setup(lead: int):
    data = encode(TEXTS, train_tokenizer(TEXTS, VOCAB), seq_len=24)
    student = tiny_causal_lm("llama", layers=1, hidden=32, heads=2, vocab_size=VOCAB)
    module = DistillModule(student, build_loss([LossTerm(name="token_kd")]), INPUTS, {})
    return module, OnlineTeacher(Oracle(lead), INPUTS, {}), data


def test_an_aligned_teacher_passes_silently():
    module, teacher, data = setup(lead=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preflight(module, teacher, data, (set(), set()))


def test_a_teacher_one_position_ahead_is_refused():
    module, teacher, data = setup(lead=2)
    with pytest.raises(ShapeMismatchError, match=r"recipe.teacher: .*labels\[t\+1\].*shifted by \+1"):
        preflight(module, teacher, data, (set(), set()))


def test_a_teacher_one_position_behind_is_reported():
    module, teacher, data = setup(lead=0)
    with pytest.warns(UserWarning, match=r"recipe.teacher: .*labels\[t-1\].*shifted by -1.*copies its input"):
        preflight(module, teacher, data, (set(), set()))


def test_top_k_teachers_are_checked_and_uninformative_ones_pass():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, 50, (4, 12), generator=g)
    ahead = torch.roll(labels, -1, dims=1)
    values = torch.tensor([5.0, 1.0]).expand(4, 12, 2)
    topk = TopK(values, torch.stack([ahead, ahead.flip(1)], -1), None, 50)
    assert alignment_problem(topk, labels)[0] == 1
    assert alignment_problem(torch.randn(4, 12, 50, generator=g), labels) is None  # fits nothing
    assert alignment_problem(torch.randn(2, 4, 50, generator=g), labels[:2, :4]) is None  # too few tokens


def test_labels_are_shifted_in_exactly_one_place():
    """Only kdforge.lm.rows shifts ids into labels; no loss, metric, model, training or data module shifts
    them (or the logits) again."""
    shifting = []
    modules = ("losses", "lm", "llm", "metrics", "models", "train", "data", "cache", "capture.py", "evaluate.py")
    for path in sorted(p for name in modules for p in ([SRC / name] if name.endswith(".py") else
                                                       (SRC / name).rglob("*.py"))):
        text = path.read_text()
        for pattern in ("ids[:, 1:]", "labels[:, 1:]", "logits[:, :-1]", "labels[..., 1:]", "logits[..., :-1, :]"):
            if pattern in text:
                shifting.append(f"{path.relative_to(SRC)}: {pattern}")
    assert shifting == ["lm/rows.py: ids[:, 1:]"]
