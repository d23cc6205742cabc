"""The shipped chat recipe (recipes/llm_chat) runs end to end in one process: a causal-LM teacher saved with
save_pretrained (tiny Llama config + a tokenizer with a chat template beside it) distilled into a smaller one, on
the recipe's chat JSONL file, with the loss only on the assistant's tokens."""

import json
import runpy
import shutil
from pathlib import Path

import torch

from kdforge.app.data import load_recipe_data
from kdforge.app.run import run_recipe
from kdforge.recipe import load_recipe
from kdforge.types import IGNORE_INDEX

FOLDER = Path(__file__).resolve().parents[2] / "recipes" / "llm_chat"
SMALL = ["baseline=false", "data.args.limit=48", "data.args.seq_len=96", "teacher.train.max_steps=2",
         "teacher.train.batch_size=8", "train.max_steps=2", "train.batch_size=8"]


def recipe_folder(tmp_path: Path) -> Path:
    """The recipe and its chat file, and the teacher folder as make_teacher.py writes it (smaller)."""
    for name in ("chat_llama_from_llama.yaml", "chat.jsonl"):
        shutil.copy(FOLDER / name, tmp_path / name)
    make_teacher = runpy.run_path(str(FOLDER / "make_teacher.py"))["make_teacher"]
    make_teacher(tmp_path / "teacher", tmp_path / "chat.jsonl", layers=2, hidden=32)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "teacher").iterdir()}
    return tmp_path


def test_chat_recipe_distils_a_saved_teacher_with_assistant_only_labels(tmp_path):
    folder = recipe_folder(tmp_path)
    recipe = load_recipe(folder / "chat_llama_from_llama.yaml", overrides=SMALL)
    data = load_recipe_data(recipe.data, recipe.base_dir)
    tokenizer = data.tokenizer.backend
    assert tokenizer.chat_template and "generation" in tokenizer.chat_template
    records = [json.loads(line) for line in (folder / "chat.jsonl").read_text().splitlines()[:48]]
    # what the assistant-only labels must spell: each conversation's replies, each closed by EOS
    replies = {"".join(m["content"] + "[EOS]" for m in r["messages"] if m["role"] == "assistant") for r in records}
    rows = data.student_train.tensors
    for ids, labels, length in zip(rows["input_ids"], rows["labels"], rows["attention_mask"].sum(1), strict=True):
        trained = labels != IGNORE_INDEX
        assert torch.equal(labels[:-1][trained[:-1]], ids[1:][trained[:-1]])  # the next token, shifted once
        if length < 96:  # not cut at seq_len: exactly the replies
            assert tokenizer.decode(labels[trained].tolist()) in replies
        assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id

    result = run_recipe(recipe, out_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert (tmp_path / "run" / "seed-0" / "student" / "model.safetensors").is_file()
    assert report["student"]["params"] < report["teacher"]["params"]
    assert result.report["data"]["test"] == len(data.test)
