"""A cache records the data's tokenizer (hash of its vocabulary and merges) and the position alignment of its
language-model rows; a store built with one tokenizer or alignment is refused for another, in one line."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from kdforge.app.cache import ALIGNMENTS, _check_text, alignment_of, text_record
from kdforge.cache.hashing import tokenizer_fingerprint
from kdforge.cache.store import CacheError
from kdforge.data.lm import train_tokenizer
from kdforge.lm.rows import lm_rows
from kdforge.recipe import recipe_from_dict
from kdforge.types import IGNORE_INDEX, TensorData

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the sun is hot today"] * 5


def lm_recipe(vocab_size: int) -> dict:
    inputs = ["input_ids", "attention_mask"]
    model = {"model": "py:kdforge.llm.data:tiny_causal_lm", "inputs": inputs,
             "args": {"arch": "gpt2", "layers": 1, "hidden": 16, "heads": 2, "vocab_size": 320}}
    return {"name": "tok", "seeds": [0], "baseline": False,
            "data": {"source": "text:stdlib_lm", "args": {"limit": 60, "vocab_size": vocab_size, "seq_len": 12},
                     "test_size": 0.2, "val_size": 0.1},
            "teacher": {**model, "cache": {"dir": "cache", "logits": "sampled", "samples": 4}},
            "student": model, "losses": [{"name": "token_kd"}],
            "train": {"max_steps": 1, "batch_size": 8, "progress": False}}


def test_the_tokenizer_hash_covers_vocabulary_and_merges_not_padding():
    a, b = train_tokenizer(TEXTS, 280), train_tokenizer(TEXTS[:3] + ["zebra quokka"] * 3, 280)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(train_tokenizer(TEXTS, 280))  # deterministic
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    padded = train_tokenizer(TEXTS, 280)
    padded.enable_padding(length=20)
    assert tokenizer_fingerprint(padded) == tokenizer_fingerprint(a)


def test_alignment_is_read_from_the_rows():
    ids = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0]])
    rows = lm_rows(ids, torch.tensor([5, 3]))
    assert alignment_of(rows) == ALIGNMENTS["next"] == "labels[t] = input_ids[t+1]"
    same = rows.with_tensor("labels", torch.where(rows.tensors["attention_mask"].bool(), ids, IGNORE_INDEX))
    assert alignment_of(same) == ALIGNMENTS["same"]
    assert alignment_of(TensorData({"x": torch.randn(3, 2), "labels": torch.tensor([0, 1, 0])})) is None


def test_a_cache_for_another_tokenizer_or_alignment_is_refused_in_one_line(tmp_path):
    ids = torch.tensor([[1, 5, 6, 7, 2, 0]])
    rows = lm_rows(ids, torch.tensor([5]))
    built = SimpleNamespace(tokenizer=train_tokenizer(TEXTS, 280), teacher_train=rows)
    store = SimpleNamespace(manifest={"text": text_record(built)}, directory=tmp_path / "cache")
    _check_text(store, built)  # its own data passes
    other = SimpleNamespace(tokenizer=train_tokenizer(TEXTS[:3] + ["zebra quokka"] * 3, 280), teacher_train=rows)
    with pytest.raises(CacheError, match=r"another tokenizer .*kdforge cache RECIPE --overwrite") as err:
        _check_text(store, other)
    assert "\n" not in str(err.value) and str(err.value).startswith("recipe.data:")
    shifted = rows.with_tensor("labels", torch.where(rows.tensors["attention_mask"].bool(), ids, IGNORE_INDEX))
    with pytest.raises(CacheError, match="another position alignment"):
        _check_text(store, SimpleNamespace(tokenizer=built.tokenizer, teacher_train=shifted))
    _check_text(SimpleNamespace(manifest={}, directory=tmp_path), other)  # a store from before the record: as before


def test_kdforge_cache_records_the_tokenizer_and_refuses_it_for_another(tmp_path):
    from kdforge.app.teacher import cache_recipe

    built = recipe_from_dict(lm_recipe(300), base_dir=tmp_path)
    info = cache_recipe(built)
    assert info.status == "built"
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["text"]["alignment"] == "labels[t] = input_ids[t+1]" and len(manifest["text"]["tokenizer"]) == 64
    assert manifest["settings"]["logits"] == "sampled" and manifest["settings"]["samples"] == 4
    assert cache_recipe(built).status == "up to date"
    with pytest.raises(CacheError, match="built with another tokenizer"):
        cache_recipe(recipe_from_dict(lm_recipe(290), base_dir=tmp_path))
