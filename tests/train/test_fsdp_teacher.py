"""A loaded teacher under FSDP2 on several processes is built whole on process 0 only: the other processes build it
on the meta device and receive their shards (and its buffers) from process 0. The run equals the one-process run
(which builds the whole teacher), and process 1 never held the teacher's weights.

2 CPU processes (gloo) through torchrun: slow, run with `pytest -m slow tests/train/test_fsdp_teacher.py`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _run(recipe: Path, out: Path, processes: int) -> subprocess.CompletedProcess:
    job = ["-m", "tests.train.meta_teacher_job", str(recipe), str(out)]
    if processes == 1:
        command, env = [sys.executable, *job], _env()
    else:
        command = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes), *job]
        env = _env(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2")
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=500, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]


SHY_FACTORY = '''"""A teacher factory that cannot build on the meta device: it reads a tensor's value."""
import torch

from kdforge.llm.data import tiny_causal_lm


def teacher():
    if torch.zeros(1).is_meta:
        raise RuntimeError("this factory needs real tensors")
    return tiny_causal_lm("llama", layers=2, hidden=32, heads=2, vocab_size=300, seed=1)
'''


def _recipe(tmp_path: Path, teacher: dict | None = None, seeds: tuple[int, ...] = (0,)) -> Path:
    """A token-KD recipe (the stdlib LM data, a 1-layer Llama student) whose teacher is a saved `hf:` folder
    (a 2-layer Llama with random weights) unless `teacher` gives another one."""
    from kdforge.llm.data import tiny_causal_lm

    if teacher is None:
        tiny_causal_lm("llama", layers=2, hidden=32, heads=2, vocab_size=300, seed=1).save_pretrained(tmp_path / "hf")
        teacher = {"model": f"hf:{tmp_path / 'hf'}", "args": {"task": "causal_lm"}}
    data = yaml.safe_load((ROOT / "recipes" / "token_kd" / "stdlib_gpt2_from_gpt2.yaml").read_text())
    data["data"]["args"] = {"limit": 240, "vocab_size": 300, "seq_len": 24}
    data["teacher"] = {**teacher, "inputs": ["input_ids", "attention_mask"]}
    data["student"]["args"].update({"arch": "llama", "layers": 1, "hidden": 32, "heads": 2, "vocab_size": 300})
    data["train"].update({"max_steps": 4, "batch_size": 8, "eval_every": 2, "progress": False})
    data["baseline"], data["seeds"] = False, list(seeds)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    return recipe


def _same_run(one: Path, two: Path, seeds: tuple[int, ...] = (0,)) -> None:
    """The 2-process run computed what the one-process run did: the teacher's outputs, the student's losses and
    weights (to float32 rounding across 2 processes)."""
    assert json.loads((two / "environment.json").read_text())["world_size"] == 2
    # the teacher's outputs: the sharded teacher filled from process 0 computes what the whole one does
    diff = (load_file(one / "teacher_logits.safetensors")["logits"]
            - load_file(two / "teacher_logits.safetensors")["logits"]).abs().max().item()
    assert diff < 1e-5, diff
    for seed in seeds:  # each distilled student: the same losses and weights
        a, b = _log(one / f"seed-{seed}" / "student"), _log(two / f"seed-{seed}" / "student")
        assert [r["step"] for r in a] == [r["step"] for r in b]
        losses = [(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x if k.startswith(("train/", "val/"))]
        assert len(losses) >= 8 and max(abs(x - y) / max(1.0, abs(x)) for x, y in losses) < 1e-6, losses
        wa, wb = load_file(one / f"seed-{seed}" / "student" / "model.safetensors"), \
            load_file(two / f"seed-{seed}" / "student" / "model.safetensors")
        # weights to 2e-5 as in test_chat_recipe.py: AdamW turns float32 rounding into a few 1e-6 where a gradient
        # is near its eps (seed 1 measured 4.1e-6, the same with the teacher built whole on both processes, whose
        # weights this run's equal bit for bit)
        assert wa.keys() == wb.keys() and max((wa[k] - wb[k]).abs().max().item() for k in wa) < 2e-5
    assert (two / "report.json").is_file()


def _probes(two: Path) -> tuple[dict, dict]:
    return tuple(json.loads((two / f"probe-{r}.json").read_text()) for r in (0, 1))


@pytest.mark.slow
@needs_gloo
def test_fsdp_teacher_is_built_on_process_0_only_and_matches_the_whole_build(tmp_path):
    """Two seeds: the second student trains against the teacher the first one left sharded."""
    recipe = _recipe(tmp_path, seeds=(0, 1))
    _run(recipe, tmp_path / "one", processes=1)
    proc = _run(recipe, tmp_path / "two", processes=2)
    two = tmp_path / "two"
    _same_run(tmp_path / "one", two, seeds=(0, 1))
    assert "built on the meta device; its shards are filled from process 0" in proc.stderr
    # process 1 built the teacher on the meta device: when sharding reached it, it held none of its weights;
    # process 0 held them whole. It stays sharded after training (never gathered whole on every process).
    rank0, rank1 = _probes(two)
    assert rank0["teacher_shard_calls"] > 0 and rank1["teacher_shard_calls"] == rank0["teacher_shard_calls"]
    assert rank0["teacher_elements_held_at_sharding"] > 0, rank0
    assert rank1["teacher_elements_held_at_sharding"] == 0, rank1
    assert rank1["teacher_sharded_after"] and rank1["teacher_elements"] == rank0["teacher_elements"] > 0


@pytest.mark.slow
@needs_gloo
def test_fsdp_teacher_factory_that_cannot_build_on_meta_is_built_whole_with_a_warning(tmp_path):
    """A `py:` factory that fails on the meta device: process 1 builds it whole (and says so), process 0's weights
    fill the shards, and the run still equals the one-process run: more memory, never a wrong teacher."""
    (tmp_path / "meta_shy.py").write_text(SHY_FACTORY)
    recipe = _recipe(tmp_path, {"model": "py:meta_shy:teacher", "args": {}})
    _run(recipe, tmp_path / "one", processes=1)
    proc = _run(recipe, tmp_path / "two", processes=2)
    _same_run(tmp_path / "one", tmp_path / "two")
    assert "cannot be built on the meta device (RuntimeError: this factory needs real tensors)" in proc.stderr
    rank0, rank1 = _probes(tmp_path / "two")
    assert rank1["teacher_elements_held_at_sharding"] == rank0["teacher_elements_held_at_sharding"] > 0
    assert rank1["teacher_sharded_after"]


# ---------------------------------------------------------------- one process: the structure without the weights


def test_hf_structure_builds_the_saved_model_on_meta_without_reading_its_weights(tmp_path):
    from kdforge.llm.data import tiny_causal_lm
    from kdforge.models.hf import hf_structure, load_hf_model

    tiny_causal_lm("llama", layers=2, hidden=32, heads=2, vocab_size=300, seed=1).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"not weights")  # never read: a read would fail
    with torch.device("meta"):
        model = hf_structure(str(tmp_path / "hf"), {"task": "causal_lm"}, "recipe.teacher", None)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert sum(p.numel() for p in model.parameters()) > 0
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError):  # the real load does read them
        load_hf_model(str(tmp_path / "hf"), {"task": "causal_lm"}, "recipe.teacher", None)


def test_hf_structure_refuses_arguments_only_from_pretrained_understands(tmp_path):
    from kdforge.errors import KDForgeError, RecipeError
    from kdforge.llm.data import tiny_causal_lm
    from kdforge.models.hf import hf_structure

    tiny_causal_lm("llama", layers=1, hidden=16, heads=2, vocab_size=64).save_pretrained(tmp_path / "hf")
    with pytest.raises(KDForgeError, match=r"recipe.teacher.args: \['device_map'\]"):
        hf_structure(str(tmp_path / "hf"), {"task": "causal_lm", "device_map": "cpu"}, "recipe.teacher", None)
    with pytest.raises(RecipeError, match="recipe.teacher.args.task"):
        hf_structure(str(tmp_path / "hf"), {"task": "nope"}, "recipe.teacher", None)


@pytest.mark.parametrize(("world_size", "fsdp"), [("1", "true"), ("2", "false")])
def test_one_process_and_ddp_build_the_teacher_as_before(monkeypatch, world_size, fsdp):
    """Not an FSDP launch on several processes: no accelerator is made, every process builds the whole teacher."""
    from kdforge.app.teacher import _rank0_plan
    from kdforge.recipe import Recipe

    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", fsdp)
    assert _rank0_plan(None, Recipe.model_construct(), "recipe.teacher") is None  # an accelerator would need more
