"""The shipped chat recipe (recipes/llm_chat) runs end to end: a causal-LM teacher saved with save_pretrained (tiny
Llama config + a tokenizer with a chat template beside it) distilled into a smaller one, on the recipe's chat JSONL
file, with the loss only on the assistant's tokens; in one process, and (slow) under FSDP on 2 processes."""

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdforge.app.data import load_recipe_data
from kdforge.app.run import run_recipe
from kdforge.recipe import load_recipe
from kdforge.types import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "recipes" / "llm_chat"
ACCELERATE = Path(sys.executable).with_name("accelerate")
SMALL = ["baseline=false", "data.args.limit=48", "data.args.seq_len=96", "teacher.train.max_steps=2",
         "teacher.train.batch_size=8", "train.max_steps=2", "train.batch_size=8"]


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]


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


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_chat_recipe_under_fsdp_on_two_processes_matches_one_process(tmp_path):
    """The same recipe through `accelerate launch --config_file examples/accelerate/fsdp.yaml` (2 CPU processes,
    teacher and student sharded): the per-step training and validation losses equal the one-process run's to
    float32 rounding (each process's token mean is weighted by its share of the batch's assistant tokens), the
    saved teacher and student to 2e-5 (AdamW, below), one report, and the exported student loads in a process
    without torch.distributed."""
    from safetensors.torch import load_file

    from kdforge.models import load_saved_model

    folder = recipe_folder(tmp_path)
    overrides = [*SMALL, "data.args.limit=40", "teacher.train.max_steps=3", "train.max_steps=4",
                 "train.eval_every=2", "train.select=best", "train.monitor=val/loss"]
    recipe = folder / "chat_llama_from_llama.yaml"
    run_recipe(load_recipe(recipe, overrides=overrides), out_dir=tmp_path / "one")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    command = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "examples" / "accelerate" / "fsdp.yaml"),
               "-m", "kdforge.cli", "distill", str(recipe), "--out", str(tmp_path / "two"), "-q",
               *(arg for value in overrides for arg in ("--set", value))]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((tmp_path / "two" / "environment.json").read_text())["world_size"] == 2
    assert proc.stdout.count("Report:") == 1 and (tmp_path / "two" / "report.json").is_file()
    for stage in ("teacher", "seed-0/student"):
        a, b = (_log(tmp_path / run / stage) for run in ("one", "two"))
        assert [r["step"] for r in a] == [r["step"] for r in b] and any("val/loss" in r for r in b)
        losses = max(abs(x[k] - y[k]) / max(1.0, abs(x[k])) for x, y in zip(a, b, strict=True) for k in x
                     if k.startswith(("train/", "val/")))  # relative: float32 rounding of values about 6
        w1, w2 = (load_file(tmp_path / run / stage / "model.safetensors") for run in ("one", "two"))
        assert w1.keys() == w2.keys()
        weights = max((w1[k] - w2[k]).abs().max().item() for k in w1)
        print(f"{stage}: max relative |loss diff| {losses:.2g}, max |weight diff| {weights:.2g}")
        # the objective is the same to float32 rounding (losses); AdamW divides each update by the gradient's
        # running magnitude, so a weight whose gradient is near its eps (1e-8) turns a rounding difference of
        # that gradient into an update difference of up to a few 1e-6 in 4 steps at lr 3e-3 (measured 4.9e-6)
        assert losses < 1e-6 and weights < 2e-5, (stage, losses, weights)
    model, _ = load_saved_model(tmp_path / "two" / "seed-0" / "student", "test")  # no process group here
    assert all(type(p) is torch.nn.Parameter and torch.isfinite(p).all() for p in model.parameters())
