"""`kdforge doctor`: which distillation a teacher/student tokenizer pair allows, BOS duplication, template
mismatches, and the same checks before a run."""

import json
import logging

import pytest
from typer.testing import CliRunner

from kdforge.app.data import load_recipe_data
from kdforge.app.doctor import diagnose
from kdforge.app.preflight import check_lm_recipe
from kdforge.cli import app
from kdforge.errors import RecipeError
from kdforge.lm.tokenizers import CHAT_TEMPLATE, duplicated_specials, vocabulary_case
from kdforge.recipe import recipe_from_dict

WORDS = "what does it return the value and then nothing else be brief".split()
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' + m['content'] + ' <|im_end|> ' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}")


def word_tokenizer(words=WORDS, template=CHAT_TEMPLATE, adds_bos=False):
    """A word-level tokenizer: [PAD] [BOS] [EOS] [UNK], then `words` in order (ids 4, 5, ...)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if adds_bos:
        backend.post_processor = processors.TemplateProcessing(single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]",
                                        eos_token="[EOS]", unk_token="[UNK]")
    tokenizer.chat_template = template
    return tokenizer


def save(folder, tokenizer, rows=None):
    tokenizer.save_pretrained(folder)
    if rows is not None:  # what doctor reads of a model folder: config.json's vocab_size
        (folder / "config.json").write_text(json.dumps({"vocab_size": rows}))
    return folder


def lm_recipe(tmp_path, student_rows=None, student_tokenizer=None, losses=None, **extra):
    teacher_tok = extra.pop("teacher_tok", None) or word_tokenizer()
    save(tmp_path / "teacher", teacher_tok, rows=len(teacher_tok))
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": "what does it return"},
        {"role": "assistant", "content": f"the value {w}"}]}) + "\n" for w in WORDS * 2))
    student = {"model": "py:kdforge.llm.data:tiny_causal_lm",
               "args": {"arch": "llama", "layers": 1, "hidden": 16, "heads": 2,
                        "vocab_size": student_rows or len(teacher_tok)},
               "inputs": ["input_ids", "attention_mask"]}
    if student_tokenizer is not None:
        student["tokenizer"] = f"hf:{save(tmp_path / 'student_tok', student_tokenizer)}"
    data = {"name": "chat", "data": {"source": "text:lm_file", "args": {
                "path": "chat.jsonl", "tokenizer": "hf:teacher", "seq_len": 32}, "test_size": 0.2},
            "teacher": {"model": "hf:teacher", "args": {"task": "causal_lm"},
                        "inputs": ["input_ids", "attention_mask"]},
            "student": student, "losses": losses or [{"name": "token_kd"}], "train": {"max_steps": 1}, **extra}
    return recipe_from_dict(data, base_dir=tmp_path)


def messages(result, level=None):
    return [f.message for f in result.findings if level is None or f.level == level]


def test_vocabulary_cases():
    teacher = word_tokenizer()
    assert vocabulary_case(teacher, word_tokenizer()).case == "identical"
    assert vocabulary_case(teacher, word_tokenizer(WORDS[:5])).case == "prefix"
    assert vocabulary_case(word_tokenizer(WORDS + ["extra"]), word_tokenizer()).case == "prefix"
    foreign = vocabulary_case(teacher, word_tokenizer(list(reversed(WORDS))))
    assert foreign.case == "foreign" and foreign.differing == len(WORDS)
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    subset = {"[PAD]": 0, "[BOS]": 1, "[EOS]": 2, "[UNK]": 3, "value": 4 + WORDS.index("value")}
    sparse = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(subset, unk_token="[UNK]")))
    assert vocabulary_case(teacher, sparse).case == "superset"


def test_identical_tokenizers_are_fine(tmp_path):
    result = diagnose(lm_recipe(tmp_path))
    assert not result.problems and "identical tokenizers" in messages(result)[0]


def test_padded_vocabulary_asks_for_vocab_size_and_accepts_it(tmp_path):
    real = len(word_tokenizer())
    result = diagnose(lm_recipe(tmp_path, student_rows=real + 8))
    (error,) = messages(result, "error")
    assert error.startswith("recipe.losses[0] (token_kd): padded vocabulary") and f"vocab_size: {real}" in error
    fixed = diagnose(lm_recipe(tmp_path, student_rows=real + 8, losses=[{"name": "token_kd", "vocab_size": real}]))
    assert not fixed.problems and "padded vocabulary" in messages(fixed)[0]


def test_superset_vocabulary_needs_the_data_in_the_student_tokens(tmp_path):
    small = word_tokenizer(WORDS[:6])
    result = diagnose(lm_recipe(tmp_path, student_rows=len(small), student_tokenizer=small))
    errors = messages(result, "error")
    assert any("recipe.student.tokenizer: the data is tokenized with hf:teacher" in e for e in errors)
    assert any("superset vocabulary" in e and f"vocab_size: {len(small)}" in e for e in errors)
    # the data in the student's tokens (which the teacher reads alike) and vocab_size on the loss: fine
    fixed = lm_recipe(tmp_path, student_rows=len(small), student_tokenizer=small,
                      losses=[{"name": "token_kd", "vocab_size": len(small)}])
    fixed.data.args["tokenizer"] = fixed.student.tokenizer
    result = diagnose(fixed)
    assert not result.problems and "superset vocabulary" in messages(result)[0]


def test_foreign_vocabulary_points_to_sequence_level_and_cross_tokenizer_losses(tmp_path):
    other = word_tokenizer(list(reversed(WORDS)))
    result = diagnose(lm_recipe(tmp_path, student_tokenizer=other))
    (foreign,) = [e for e in messages(result, "error") if "foreign vocabulary" in e]
    for name in ("seq_kd", "uld", "span_kl", "span_hybrid", "docs/llm.md#distilling-across-tokenizers"):
        assert name in foreign


def test_bos_written_by_the_template_and_added_by_the_tokenizer_is_caught(tmp_path):
    doubling = word_tokenizer(adds_bos=True)
    assert duplicated_specials(doubling) == ["BOS"] and duplicated_specials(word_tokenizer()) == []
    result = diagnose(lm_recipe(tmp_path, teacher_tok=doubling))
    (warning,) = messages(result, "warning")
    assert "writes the BOS token and the tokenizer adds another" in warning and "add_special_tokens=False" in warning
    data = load_recipe_data(lm_recipe(tmp_path, teacher_tok=doubling).data, tmp_path)
    starts = data.student_train.tensors["input_ids"][:, :2]
    assert (starts[:, 0] == 1).all() and (starts[:, 1] != 1).all()  # kdforge's rows hold one BOS


def test_chat_template_mismatch_is_a_problem_with_its_fix(tmp_path):
    result = diagnose(lm_recipe(tmp_path, student_tokenizer=word_tokenizer(template=CHATML)))
    (warning,) = messages(result, "warning")
    assert "chat templates differ" in warning and "chat_template.jinja" in warning


def test_cli_exit_codes_and_one_line_per_problem(tmp_path):
    fine = tmp_path / "fine"
    fine.mkdir()
    lm_recipe(fine)
    recipe_file = fine / "r.yaml"
    import yaml

    recipe_file.write_text(yaml.safe_dump(lm_recipe(fine).model_dump(mode="json")))
    runner = CliRunner()
    ok = runner.invoke(app, ["doctor", str(recipe_file)])
    assert ok.exit_code == 0, ok.output
    other = save(fine / "other", word_tokenizer(template=CHATML))
    bad = runner.invoke(app, ["doctor", str(recipe_file), "--set", "student.args.vocab_size=40",
                              "--set", f"student.tokenizer=hf:{other}"])
    assert bad.exit_code == 2
    problems = [line for line in bad.output.splitlines() if line.startswith(("error: ", "warning: "))]
    assert len(problems) == 2 and problems[0].startswith("error: recipe.losses[0] (token_kd): padded vocabulary")


def test_a_recipe_without_tokenizers_has_nothing_to_compare():
    from pathlib import Path

    from kdforge.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "token_kd" / "stdlib_gpt2_from_gpt2.yaml")
    result = diagnose(recipe)
    assert not result.problems and "no tokenizer to compare" in messages(result)[0]


def test_preflight_refuses_errors_and_logs_warnings(tmp_path, caplog):
    recipe = lm_recipe(tmp_path, student_tokenizer=word_tokenizer(list(reversed(WORDS))))
    data = load_recipe_data(recipe.data, tmp_path)
    with pytest.raises(RecipeError, match="foreign vocabulary"):
        check_lm_recipe(recipe, data)
    recipe = lm_recipe(tmp_path, student_tokenizer=word_tokenizer(template=CHATML))
    with caplog.at_level(logging.WARNING, logger="kdforge"):
        check_lm_recipe(recipe, data)
    assert "chat templates differ" in caplog.text
    cached = lm_recipe(tmp_path)
    cached.teacher.cache = type(recipe.teacher).model_fields["cache"].annotation.__args__[0](dir="cache")
    with pytest.raises(RecipeError, match="recipe.data.args.packing"):
        check_lm_recipe(cached, data)
