"""A served teacher in a recipe: `teacher.model: served:URL` builds the top-k cache (kdforge cache), students
train from it without contacting the server, and the recipe refuses what a served teacher cannot do."""

from __future__ import annotations

import json

import pytest

from kdforge.cache.store import CacheError
from kdforge.errors import RecipeError
from kdforge.llm.data import tiny_causal_lm
from kdforge.recipe import recipe_from_dict
from tests.llm.served_server import TeacherServer

VOCAB, SEQ, N = 300, 16, 5
INPUTS = ["input_ids", "attention_mask"]


def recipe(url: str, base_dir, **teacher) -> dict:
    return {
        "name": "served", "seeds": [0], "baseline": False,
        "data": {"source": "text:stdlib_lm", "args": {"limit": 120, "vocab_size": VOCAB, "seq_len": SEQ},
                 "test_size": 0.2, "val_size": 0.1},
        "teacher": {"model": f"served:{url}", "inputs": INPUTS, "cache": "cache",
                    "args": {"vocab_size": VOCAB, "top_logprobs": N, "model": "tiny-teacher", "concurrency": 2,
                             "prompts_per_request": 16}, **teacher},
        "student": {"model": "py:kdforge.llm.data:tiny_causal_lm", "inputs": INPUTS,
                    "args": {"arch": "gpt2", "layers": 1, "hidden": 16, "heads": 2, "vocab_size": VOCAB}},
        "losses": [{"name": "token_kd", "divergence": "forward_kl", "temperature": 2.0}, {"name": "ce"}],
        "train": {"max_steps": 2, "batch_size": 8, "lr": 0.003, "optimizer": "adamw", "progress": False},
    }


def served_recipe(tmp_path):
    """The recipe's data tokenizer on a local server, and the recipe pointing at it (a context manager)."""
    from kdforge.app.data import load_recipe_data

    data = recipe_from_dict(recipe("http://127.0.0.1:9", tmp_path), base_dir=tmp_path).data
    tokenizer = load_recipe_data(data, tmp_path).tokenizer.backend  # the data's own tokenizer, on the server
    model = tiny_causal_lm("llama", layers=1, hidden=16, heads=2, vocab_size=VOCAB, seed=0)  # untied: no copying
    return TeacherServer(model, tokenizer)


def test_kdforge_cache_builds_the_store_from_the_server_and_records_it(tmp_path):
    from kdforge.app.teacher import cache_recipe

    with served_recipe(tmp_path) as server:
        spec = recipe_from_dict(recipe(server.url, tmp_path), base_dir=tmp_path)
        info = cache_recipe(spec)
        assert info.status == "built" and info.rows["train"] > 0
        manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
        assert manifest["teacher"]["server"] == {"url": server.url, "model": "tiny-teacher", "protocol": "vllm",
                                                 "top_logprobs": N, "vocab_size": VOCAB}
        assert manifest["settings"]["logits"] == "topk" and manifest["settings"]["k"] == N
        asked = server.attempts
        assert cache_recipe(spec).status == "up to date" and server.attempts == asked
        other = recipe_from_dict(recipe(server.url, tmp_path, args={"vocab_size": VOCAB, "top_logprobs": N,
                                                                   "model": "another-teacher"}), base_dir=tmp_path)
        with pytest.raises(CacheError, match="built for another teacher"):
            cache_recipe(other)


@pytest.mark.slow
def test_a_distill_run_builds_the_cache_then_trains_and_evaluates_from_it_alone(tmp_path):
    from kdforge.app.run import run_recipe

    with served_recipe(tmp_path) as server:
        spec = recipe_from_dict(recipe(server.url, tmp_path), base_dir=tmp_path)
        run_recipe(spec, out_dir=tmp_path / "run")  # builds the missing cache first
        asked = server.attempts
        assert asked > 0 and (tmp_path / "cache" / "manifest.json").is_file()
        run_recipe(spec, out_dir=tmp_path / "again")  # the store alone: the server is not asked again
        assert server.attempts == asked
    assert (tmp_path / "again" / "seed-0" / "student" / "model.safetensors").is_file()


def test_the_recipe_refuses_what_a_served_teacher_cannot_do(tmp_path):
    base = recipe("http://127.0.0.1:9", tmp_path)
    with pytest.raises(RecipeError, match="cannot run inside the training step; add 'cache: DIR'"):
        recipe_from_dict({**base, "teacher": {**base["teacher"], "cache": None}}, base_dir=tmp_path)
    with pytest.raises(RecipeError, match="keeps its weights on the server; drop 'train'"):
        recipe_from_dict({**base, "teacher": {**base["teacher"], "train": {"max_steps": 1}}}, base_dir=tmp_path)
    with pytest.raises(RecipeError, match="set cache.logits: topk"):
        recipe_from_dict({**base, "teacher": {**base["teacher"], "cache": {"dir": "c", "logits": "full"}}},
                         base_dir=tmp_path)
    from kdforge.models import build_model

    with pytest.raises(RecipeError, match="recipe.student.model: a served model .* can only be the teacher"):
        build_model("served:http://127.0.0.1:9", {}, None, "recipe.student")
