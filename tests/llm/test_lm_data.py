"""Causal-LM rows, the in-process tokenizer, tiny models through the kdforge module, vocabulary preflight."""

import math
import warnings

import pytest
import torch

from kdforge.app.build import build_loss
from kdforge.app.preflight import preflight
from kdforge.errors import ShapeMismatchError
from kdforge.llm.data import BOS, EOS, PAD, encode, lm_rows, stdlib_lm, tiny_causal_lm, train_tokenizer
from kdforge.metrics.task import perplexity, token_nll
from kdforge.recipe import LossTerm
from kdforge.train.module import DistillModule, OnlineTeacher, standard_step

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Return the list of names in this module.",
         "A tiny corpus is enough for a tokenizer test."] * 3
INPUTS = ["input_ids", "attention_mask"]


def test_rows_shift_labels_and_mask_padding():
    data = lm_rows(torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]]), torch.tensor([4, 3]))
    assert data.tensors["labels"].tolist() == [[5, 6, 2, -100, -100], [7, 2, -100, -100, -100]]
    assert data.tensors["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert torch.equal(data.tensors["mask"], data.tensors["labels"] != -100)
    prompt = lm_rows(torch.tensor([[1, 5, 6, 2, 0]]), torch.tensor([4]), prompt_lengths=torch.tensor([2]))
    assert prompt.tensors["labels"].tolist() == [[-100, 6, 2, -100, -100]]  # only continuation tokens count


def test_tokenizer_is_deterministic_and_round_trips():
    first, second = train_tokenizer(TEXTS, 300), train_tokenizer(TEXTS, 300)
    data = encode(TEXTS[:2], first, seq_len=40)
    assert torch.equal(data.tensors["input_ids"], encode(TEXTS[:2], second, seq_len=40).tensors["input_ids"])
    ids = data.tensors["input_ids"][0]
    assert ids[0] == BOS and EOS in ids.tolist() and ids[-1] == PAD
    assert first.decode(ids.tolist()) == TEXTS[0]


def test_stdlib_lm_splits_disjoint_rows():
    bundle, tokenizer = stdlib_lm(limit=200, vocab_size=300, seq_len=32)
    assert len(bundle.teacher_train) + len(bundle.val) + len(bundle.test) == 200
    assert bundle.info.num_classes <= tokenizer.get_vocab_size() == 300
    train_rows = {tuple(r) for r in bundle.teacher_train.tensors["input_ids"].tolist()}
    assert not train_rows & {tuple(r) for r in bundle.test.tensors["input_ids"].tolist()}


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    labels = torch.tensor([[3, 1, -100]])
    nll, n = token_nll(labels, torch.zeros(1, 3, 10))
    assert n == 2 and perplexity(nll, n) == pytest.approx(10.0)
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p(label 1) = 3/4
    assert perplexity(*token_nll(torch.tensor([[1]]), logits)) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="no counted tokens"):
        perplexity(*token_nll(torch.full((1, 2), -100), torch.zeros(1, 2, 4)))


def setup(student_vocab, teacher_vocab, **loss_args):
    data = encode(TEXTS, train_tokenizer(TEXTS, 300), seq_len=24)
    teacher = tiny_causal_lm("llama", layers=1, hidden=32, heads=2, vocab_size=teacher_vocab, seed=1)
    student = tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=student_vocab)
    module = DistillModule(student, build_loss([LossTerm(name="token_kd", **loss_args)]), INPUTS, {})
    return module, OnlineTeacher(teacher, INPUTS, {}), data


def test_token_kd_trains_a_gpt2_student_from_a_llama_teacher():
    module, teacher, data = setup(300, 300, divergence="jsd", chunk_size=16)
    preflight(module, teacher, data, (set(), set()))
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    values = []
    for _ in range(15):
        terms = standard_step(module, teacher, data[slice(0, 9)])
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        values.append(terms["token_kd"].item())
    assert values[-1] < 0.5 * values[0]


def test_preflight_rejects_different_vocabularies_pointing_to_sequence_level_kd():
    module, teacher, data = setup(300, 320)
    with pytest.raises(ShapeMismatchError, match=r"recipe.losses\[token_kd\].*300 entries but the teacher's 320"
                                                 r".*sequence-level KD"):
        preflight(module, teacher, data, (set(), set()))


def test_preflight_trims_padded_vocabularies_with_a_warning():
    module, teacher, data = setup(300, 320, vocab_size=300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preflight(module, teacher, data, (set(), set()))
    assert any("teacher 320 -> 300 (20 padded rows dropped)" in str(w.message) for w in caught)
    module, teacher, data = setup(300, 320, vocab_size=310)
    with pytest.raises(ShapeMismatchError, match="vocab_size=310"):
        preflight(module, teacher, data, (set(), set()))
