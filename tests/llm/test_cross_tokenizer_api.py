"""`kdforge.distill` across tokenizers: the teacher reads its own tokens through a `teacher_inputs` mapping, and
the result gives each model's figures on its own tokens and the agreement at the aligned span ends."""

import pytest
import torch

import kdforge
from kdforge.data import load_data
from kdforge.errors import KDForgeError
from kdforge.llm.data import tiny_causal_lm
from kdforge.recipe import DataSpec, TrainConfig

TEACHER_INPUTS = {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"}


@pytest.fixture(scope="module")
def paired():
    spec = DataSpec(source="text:stdlib_lm", args={"limit": 160, "vocab_size": 260, "tokenizer": "wordpiece",
                                                   "teacher_tokenizer": "bpe", "teacher_vocab_size": 270,
                                                   "seq_len": 20})
    return load_data(spec, where="recipe.data")


def test_distill_takes_a_teacher_inputs_mapping_across_tokenizers(paired, tmp_path):
    teacher = tiny_causal_lm(layers=1, hidden=32, vocab_size=270, seed=1)
    student = tiny_causal_lm(layers=1, hidden=32, vocab_size=260, seed=2)
    before = [p.detach().clone() for p in student.parameters()]
    student, result = kdforge.distill(
        teacher, student, paired, losses=[{"name": "span_kl"}, {"name": "ce"}],
        train=TrainConfig(max_steps=3, batch_size=8, progress=False), inputs=["input_ids", "attention_mask"],
        teacher_inputs=TEACHER_INPUTS, out_dir=tmp_path / "run")
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    # each model on its own tokens; the shared figure is bits per byte over the same test text
    assert 0 <= result.teacher["accuracy"] <= 1 and 0 <= result.student["accuracy"] <= 1
    assert result.teacher["bits_per_byte"] > 0 and result.student["bits_per_byte"] > 0
    teacher_tokens = int((paired.test.tensors["teacher_labels"] != -100).sum())
    assert result.teacher["n"] == teacher_tokens  # counted on the teacher's own labels, not the student's
    assert 0 <= result.student["agreement"] <= 1 and result.student["agreement_n"] > 0
    # the same figures the run report computes for these models (app.evaluation), not numbers of their own
    from kdforge.app.evaluation import lm_bits_per_byte, span_end_logits
    from kdforge.evaluate import agreement_summary, predict_logits

    test = paired.test
    s_logits = predict_logits(student, test, ["input_ids", "attention_mask"])
    t_logits = predict_logits(teacher, test, TEACHER_INPUTS)
    s_ends, t_ends = span_end_logits(s_logits, t_logits, test, paired.vocab_map)
    expected = agreement_summary(t_ends, s_ends, 0.95)
    assert result.student["agreement"] == expected["agreement"]
    assert result.student["agreement_n"] == expected["agreement_n"]
    assert result.student["bits_per_byte"] == lm_bits_per_byte(s_logits, test.tensors["labels"], test)["bits_per_byte"]


def test_without_the_mapping_the_teacher_would_read_the_students_ids_and_is_refused(paired, tmp_path):
    teacher = tiny_causal_lm(layers=1, hidden=32, vocab_size=270, seed=1)
    student = tiny_causal_lm(layers=1, hidden=32, vocab_size=260, seed=2)
    refused = r"recipe.teacher.inputs: the rows pair two tokenizations.*teacher_input_ids"
    with pytest.raises(KDForgeError, match=refused):
        kdforge.distill(teacher, student, paired, losses=[{"name": "span_kl"}, {"name": "ce"}],
                        train=TrainConfig(max_steps=1, batch_size=8, progress=False),
                        inputs=["input_ids", "attention_mask"], out_dir=tmp_path / "run")


def test_a_recipe_whose_teacher_reads_the_students_tokens_is_refused_before_training(tmp_path):
    from pathlib import Path

    from kdforge.app.run import run_recipe
    from kdforge.recipe import load_recipe

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "cross_tokenizer" / "stdlib_unigram_from_bpe.yaml"
    small = ["data.args.limit=200", "data.args.vocab_size=300", "data.args.teacher_vocab_size=280",
             "data.args.seq_len=24", "teacher.args.layers=1", "teacher.args.hidden=32", "teacher.args.vocab_size=280",
             "student.args.hidden=32", "student.args.vocab_size=300", "teacher.train.max_steps=2",
             "train.max_steps=2", "train.batch_size=8", "teacher.train.batch_size=8",
             "teacher.inputs=[input_ids, attention_mask]"]
    with pytest.raises(KDForgeError, match="recipe.teacher.inputs: the rows pair two tokenizations"):
        run_recipe(load_recipe(recipe, overrides=small), out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "teacher" / "model.safetensors").exists()  # refused before the teacher trained
