"""A cross-tokenizer recipe (a BPE teacher, a Unigram student, rows paired and aligned by text:stdlib_lm's
teacher_tokenizer) runs end to end, and the recipe keys that select it are checked."""

import json
from pathlib import Path

import pytest
import torch

from kdforge.app.run import run_recipe
from kdforge.data import load_data
from kdforge.errors import RecipeError
from kdforge.models.forward import call_model
from kdforge.recipe import DataSpec, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "cross_tokenizer" / "stdlib_unigram_from_bpe.yaml"
SMALL = ["data.args.limit=300", "data.args.vocab_size=300", "data.args.teacher_vocab_size=280",
         "data.args.seq_len=24", "teacher.args.layers=1", "teacher.args.hidden=32", "teacher.args.vocab_size=280",
         "student.args.hidden=32", "student.args.vocab_size=300", "teacher.train.max_steps=3", "train.max_steps=3",
         "train.batch_size=8", "teacher.train.batch_size=8"]


@pytest.mark.parametrize("cache", [False, True], ids=["online", "cached"])
def test_shipped_recipe_distils_across_tokenizers(tmp_path, cache, monkeypatch):
    from kdforge.cache.teacher import CachedTeacher

    reads = []
    original = CachedTeacher.read
    monkeypatch.setattr(CachedTeacher, "read", lambda self, ids, inputs=None: reads.append(len(ids)) or
                        original(self, ids, inputs))
    store = tmp_path / "store"
    recipe = load_recipe(RECIPE, overrides=[*SMALL, *([f"teacher.cache={store}"] if cache else [])])
    assert recipe.teacher.inputs == {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"}
    result = run_recipe(recipe, out_dir=tmp_path / "run")
    if cache:  # trained, then run once into the store on its own tokens, which the student read
        manifest = json.loads((store / "manifest.json").read_text())
        assert manifest["inputs"] == recipe.teacher.inputs and manifest["vocab_size"] == 280
    assert bool(reads) == cache  # the students read the store (cached), or never (online)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    # the teacher was trained on its own tokens: its logits cover its own vocabulary
    assert result.teacher.config.vocab_size == 280
    # bits per byte: the one figure every model shares whatever its tokenizer
    for who in ("teacher", "student", "scratch"):
        assert 0 < report[who]["bits_per_byte"] < 20
    mapped = report["methods"]["0"]["span_kl"]
    assert 0 < mapped["mapped_teacher_mass"] < 1 and mapped["positions"] > 0 and mapped["teacher_vocab"] == 280
    assert 0 <= report["student"]["agreement"] <= 1  # at aligned span ends, through the shared tokens
    text = (tmp_path / "run" / "report.md").read_text()
    assert "bits per byte" in text and "different tokenizers" in text
    # the entry-by-entry sections are skipped by design, which is no failure
    assert "evaluation_error" not in report and "different tokenizers" in report["evaluation_skipped"]
    assert "The detailed evaluation was not run: teacher and student use different tokenizers" in text
    assert "failed" not in text


def test_paired_data_and_the_inputs_mapping():
    spec = DataSpec(source="text:stdlib_lm", args={"limit": 120, "vocab_size": 260, "tokenizer": "wordpiece",
                                                   "teacher_tokenizer": "bpe", "teacher_vocab_size": 270,
                                                   "seq_len": 20})
    data = load_data(spec, where="recipe.data")
    batch = data.teacher_train[torch.arange(4)]
    assert int(batch["input_ids"].max()) < 260 <= 270
    seen = {}

    def forward(**kwargs):
        seen.update(kwargs)
        return kwargs["input_ids"].float()

    call_model(forward, batch, {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"})
    assert torch.equal(seen["input_ids"], batch["teacher_input_ids"])
    assert (data.vocab_map >= 0).sum() > 10  # special tokens and words spelt the same
    with pytest.raises(RecipeError, match="teacher_tokenizer"):
        load_data(DataSpec(source="text:stdlib_lm", args={"limit": 50, "teacher_tokenizer": "sentencepiece"}),
                  where="recipe.data")


def test_bits_per_byte_is_nll_in_bits_over_the_text_bytes():
    import math

    from kdforge.data.lm import encode
    from kdforge.data.lm_tokenizers import train_lm_tokenizer
    from kdforge.metrics.task import bits_per_byte, token_nll

    assert bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="no bytes"):
        bits_per_byte(1.0, 0)
    texts = ["héllo wörld", "a much longer sentence that will not fit in the row at all"]
    tokenizer = train_lm_tokenizer(texts * 20, "bpe", 270)
    rows = encode(texts, tokenizer, seq_len=20)
    assert int(rows.tensors["text_bytes"][0]) == len(texts[0].encode())  # fits: every byte
    cut = int(rows.tensors["text_bytes"][1])
    assert 0 < cut < len(texts[1].encode())  # cut after the 19 tokens that fit
    uniform = torch.zeros(2, 20, 270)  # every token costs log2(270) bits
    nll, n = token_nll(rows.tensors["labels"], uniform)
    expected = n * math.log2(270) / int(rows.tensors["text_bytes"].sum())
    assert bits_per_byte(nll, int(rows.tensors["text_bytes"].sum())) == pytest.approx(expected)
