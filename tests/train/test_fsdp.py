"""FSDP2 (`fully_shard`) training: 2 CPU processes (gloo) match one process, kill -9 + resume is exact, validation
and the report happen once, the teacher holds no gradients or optimizer state, on-policy GKD generates in lockstep;
activation checkpointing; refusals.

The multi-process tests start torchrun / accelerate launch (tens of seconds each on 2 shared cores): they are
marked slow and run with `pytest -m slow tests/train/test_fsdp.py`.
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

from kdforge.errors import TrainingError

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
ACCELERATE = Path(sys.executable).with_name("accelerate")
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}  # what `accelerate launch` sets from fsdp.yaml
needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def _job(out: Path, *args: str, processes: int = 1, check: bool = True, timeout: int = 400
         ) -> subprocess.CompletedProcess:
    if processes == 1:
        command, env = [sys.executable, "-m", "tests.train.fsdp_job", str(out), *args], _env()
    else:
        command = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes), "-m", "tests.train.fsdp_job",
                   str(out), *args]
        env = _env(**FSDP_ENV)
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same job as one unsharded process and as 2 FSDP processes (with activation checkpointing)."""
    root = tmp_path_factory.mktemp("fsdp")
    _job(root / "one")
    _job(root / "two", "--activation-checkpointing", processes=2)
    return root


@pytest.mark.slow
@needs_gloo
def test_two_fsdp_processes_match_one(runs):
    one, two = runs / "one", runs / "two"
    r1, r2 = json.loads((one / "result.json").read_text()), json.loads((two / "result.json").read_text())
    assert (r1["world_size"], r2["world_size"]) == (1, 2)  # torchrun really started two processes
    a, b = _log(one), _log(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]  # one log, written once: each step and eval once
    losses = [(x["train/loss"], y["train/loss"]) for x, y in zip(a, b, strict=True) if "train/loss" in x]
    assert len(losses) == 8 and max(abs(x - y) for x, y in losses) < 1e-5, losses
    evals = [(x, y) for x, y in zip(a, b, strict=True) if "val/loss" in x]
    assert len(evals) == 4 and all(abs(x["val/loss"] - y["val/loss"]) < 1e-5 for x, y in evals)
    assert r1["best_step"] == r2["best_step"]
    # the final student (best weights) and the last weights: gathered once, saved as plain safetensors
    assert _max_diff(load_file(one / "model.safetensors"), load_file(two / "model.safetensors")) < 1e-5
    assert _max_diff(load_file(one / "last.safetensors"), load_file(two / "last.safetensors")) < 1e-5
    # the teacher ran sharded in eval mode without gradients; afterwards every module is plain again
    assert not r2["teacher_ever_training"] and not r2["teacher_ever_grads"]
    assert r2["plain_after"] and r2["student_class"] == "LlamaForCausalLM"


@pytest.mark.slow
@needs_gloo
def test_sharded_checkpoint_holds_student_shards_and_no_teacher_state(runs):
    from torch.distributed.checkpoint import FileSystemReader

    folder = runs / "two" / "checkpoints" / "step-00000008"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layout"] == "fsdp" and manifest["world_size"] == 2
    assert {"sharded/__0_0.distcp", "sharded/__1_0.distcp", "sharded/.metadata"} <= set(manifest["files"])
    keys = set(FileSystemReader(str(folder / "sharded")).read_metadata().state_dict_metadata)
    assert not any("teacher" in k for k in keys)
    student = {k.removeprefix("model.") for k in keys if k.startswith("model.")}
    assert student and all(k.startswith("student.") for k in student)
    moments = {k.removeprefix("optim.state.").removesuffix(".exp_avg") for k in keys if k.endswith(".exp_avg")}
    assert moments == {k for k in student if "rotary" not in k}  # Adam state for every student weight, nothing else
    assert {k.removeprefix("best.") for k in keys if k.startswith("best.")} == student


@pytest.mark.slow
@needs_gloo
def test_kill_9_and_resume_under_fsdp_equals_the_uninterrupted_run(runs, tmp_path):
    out = tmp_path / "killed"
    killed = _job(out, "--activation-checkpointing", "--kill-at", "5", processes=2, check=False)
    assert killed.returncode != 0 and (out / "checkpoints" / "step-00000004" / "manifest.json").is_file()
    assert not (out / "result.json").exists()
    _job(out, "--activation-checkpointing", "--resume", processes=2)
    assert (out / "log.jsonl").read_bytes() == (runs / "two" / "log.jsonl").read_bytes()
    assert _max_diff(load_file(out / "model.safetensors"), load_file(runs / "two" / "model.safetensors")) == 0.0
    assert _max_diff(load_file(out / "last.safetensors"), load_file(runs / "two" / "last.safetensors")) == 0.0


@pytest.mark.slow
@needs_gloo
def test_on_policy_gkd_under_fsdp_generates_in_lockstep(tmp_path):
    """Every step on-policy (lmbda 1) on rows trimmed per batch: the two processes' batches differ in width, so
    their rollouts take different numbers of forward passes, each of which gathers the sharded student's weights.
    Generation in lockstep (`synced_gpus`) finishes; without it the run hangs at the first step (seen with it
    switched off: no step logged in 60 s), which the timeout turns into a failure."""
    _job(tmp_path, "--gkd", processes=2, timeout=180)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 8
    widths = result["widths"]
    assert any(a != b for a, b in zip(*widths, strict=True)), widths  # rollouts of different lengths did happen
    losses = [r["train/gkd"] for r in _log(tmp_path) if "train/gkd" in r]
    assert len(losses) == 8 and all(0.0 < x < 1.0 for x in losses) and losses[-1] < losses[0], losses
    weights = load_file(tmp_path / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert result["plain_after"] and not result["teacher_ever_grads"]


@pytest.mark.slow
@needs_gloo
def test_accelerate_launch_with_the_shipped_fsdp_config_runs_a_recipe(tmp_path):
    """`accelerate launch --config_file examples/accelerate/fsdp.yaml -m kdforge.cli distill`: the teacher trained
    first and the student distilled from it online, both sharded; one report; models load in one process."""
    from kdforge.app.run import run_recipe
    from kdforge.models import load_saved_model
    from kdforge.recipe import load_recipe

    data = yaml.safe_load((ROOT / "recipes" / "token_kd" / "stdlib_gpt2_from_gpt2.yaml").read_text())
    data["data"]["args"] = {"limit": 240, "vocab_size": 300, "seq_len": 24}
    for side, layers in (("teacher", 1), ("student", 2)):  # Llama: no dropout, so the processes agree
        data[side]["args"].update({"arch": "llama", "layers": layers, "hidden": 32, "vocab_size": 300})
    data["teacher"]["train"].update({"max_steps": 4, "batch_size": 8, "checkpoint_every": 2})
    data["train"].update({"max_steps": 6, "batch_size": 8, "eval_every": 3, "checkpoint_every": 3,
                          "activation_checkpointing": True, "progress": False, "select": "best",
                          "monitor": "val/loss"})
    data["baseline"] = False
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data))
    run_recipe(load_recipe(recipe), out_dir=tmp_path / "one")
    proc = subprocess.run([str(ACCELERATE), "launch", "--config_file", str(ROOT / "examples/accelerate/fsdp.yaml"),
                           "-m", "kdforge.cli", "distill", str(recipe), "--out", str(tmp_path / "two"), "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=500, env=_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((tmp_path / "two" / "environment.json").read_text())["world_size"] == 2
    assert proc.stdout.count("Report:") == 1
    for stage in ("teacher", "seed-0/student"):
        a, b = _log(tmp_path / "one" / stage), _log(tmp_path / "two" / stage)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        # rows split 4/4 hold different numbers of counted tokens; each process's token mean is weighted by its
        # share of the global batch's counted tokens, so 2 processes optimise the one-process token mean
        # (to float32 rounding: 1e-6 relative for the losses, about 6 here; 1e-6 absolute for the weights)
        losses = max(abs(x[k] - y[k]) / max(1.0, abs(x[k])) for x, y in zip(a, b, strict=True) for k in x
                     if k.startswith("train/"))
        weights = _max_diff(load_file(tmp_path / "one" / stage / "model.safetensors"),
                            load_file(tmp_path / "two" / stage / "model.safetensors"))
        print(f"{stage}: max relative |loss diff| {losses:.2g}, max |weight diff| {weights:.2g}")
        assert losses < 1e-6 and weights < 1e-6, (stage, losses, weights)
        assert (tmp_path / "two" / stage / "checkpoints" / "latest").is_file()
        model, _ = load_saved_model(tmp_path / "two" / stage, "test")  # no process group in this process
        assert all(type(p) is torch.nn.Parameter for p in model.parameters())
    assert (tmp_path / "two" / "report.json").is_file()


# ---------------------------------------------------------------- one process: plans, refusals, checkpointing


class _Accelerator:
    """What `requested_plan` reads from an Accelerator."""

    def __init__(self, distributed_type="MULTI_CPU", mixed_precision="no"):
        from accelerate.utils import DistributedType

        self.distributed_type = DistributedType(distributed_type)
        self.mixed_precision = mixed_precision
        self.state = type("State", (), {"fsdp_plugin": None})()


def _clear_fsdp_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("FSDP_") or key == "ACCELERATE_USE_FSDP":
            monkeypatch.delenv(key)


def test_the_fsdp_plan_comes_from_the_launch_environment(monkeypatch):
    from kdforge.train.sharding import ShardingPlan, requested_plan

    _clear_fsdp_env(monkeypatch)
    assert requested_plan(_Accelerator()) is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer")
    assert requested_plan(_Accelerator(mixed_precision="bf16")) == ShardingPlan(False, ("LlamaDecoderLayer",), "bf16")


@pytest.mark.parametrize(("env", "precision", "message"), [
    ({"FSDP_VERSION": "1"}, "no", "FSDP version 1; kdforge trains with FSDP2.*fsdp_version: 2"),
    ({"FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"}, "no", "fsdp_offload_params: true.*set it to false"),
    ({"FSDP_VERSION": "2"}, "fp16", r"recipe.train.mixed_precision: fp16 under FSDP .*use bf16"),
])
def test_fsdp_settings_the_loop_cannot_honour_are_refused(monkeypatch, env, precision, message):
    from kdforge.train.sharding import requested_plan

    _clear_fsdp_env(monkeypatch)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(TrainingError, match=message):
        requested_plan(_Accelerator(mixed_precision=precision), "recipe.train")


@pytest.mark.parametrize("engine", ["DEEPSPEED", "MEGATRON_LM"])
def test_deepspeed_and_megatron_are_refused_in_one_line(tmp_path, monkeypatch, engine):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from tests.train.test_loop import make_job

    from kdforge.train.loop import fit

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType(engine)))
    with pytest.raises(TrainingError, match=f"set up for {engine}, .*fsdp.yaml.*ddp.yaml") as caught:
        fit(make_job(tmp_path, total_steps=2), Accelerator())
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "checkpoints").exists()


def test_an_fsdp_checkpoint_is_not_resumed_without_fsdp(tmp_path):
    from accelerate import Accelerator
    from tests.train.test_loop import make_job

    from kdforge.train.checkpoint import latest_checkpoint, load_checkpoint
    from kdforge.train.loop import fit

    job = make_job(tmp_path, total_steps=3)
    fit(job, Accelerator())
    path = latest_checkpoint(tmp_path / "checkpoints")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "layout": "fsdp", "world_size": 2}))
    with pytest.raises(TrainingError, match="FSDP shards of 2 processes; resume it under the same FSDP launch"):
        load_checkpoint(path, job.module, torch.optim.SGD(job.module.parameters(), lr=0.1), None)


def _lm_job(tmp_path, checkpointing: bool):
    from tests.train.fsdp_job import INPUTS, TEXTS

    from kdforge.app.build import build_loss
    from kdforge.llm.data import encode, tiny_causal_lm, train_tokenizer
    from kdforge.recipe import LossTerm
    from kdforge.train.config import LoopConfig
    from kdforge.train.loop import TrainJob
    from kdforge.train.module import DistillModule, OnlineTeacher

    data = encode(TEXTS * 2, train_tokenizer(TEXTS, 280), seq_len=16)
    teacher = tiny_causal_lm("llama", layers=1, hidden=32, heads=2, vocab_size=280, seed=1)
    student = tiny_causal_lm("gpt2", layers=2, hidden=32, heads=2, vocab_size=280, seed=0)
    student.config.resid_pdrop = student.config.embd_pdrop = student.config.attn_pdrop = 0.0
    for module in student.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    module = DistillModule(student, build_loss([LossTerm(name="token_kd")]), INPUTS, {})
    cfg = LoopConfig(max_steps=3, batch_size=4, optimizer="adamw", lr=3e-3, progress=False, checkpoint_minutes=None,
                     activation_checkpointing=checkpointing)
    return TrainJob("ac", module, OnlineTeacher(teacher, INPUTS, {}), data, cfg, 3, tmp_path)


def test_activation_checkpointing_in_one_process_trains_the_same_and_is_switched_off_after(tmp_path):
    from accelerate import Accelerator

    from kdforge.train.loop import fit

    torch.set_num_threads(1)
    plain, recomputed = _lm_job(tmp_path / "a", False), _lm_job(tmp_path / "b", True)
    fit(plain, Accelerator(cpu=True))
    seen = []
    step = recomputed.step_fn

    def spy(module, teacher, batch):
        seen.append(module.student.is_activation_checkpointing)
        return step(module, teacher, batch)

    recomputed.step_fn = spy
    fit(recomputed, Accelerator(cpu=True))
    assert seen == [True] * 3 and not recomputed.module.student.is_activation_checkpointing
    assert _log(tmp_path / "a") == _log(tmp_path / "b")
    assert _max_diff(plain.module.state_dict(), recomputed.module.state_dict()) < 1e-6


def test_activation_checkpointing_wraps_plain_blocks_and_refuses_a_model_without_any(tmp_path):
    from tests.train.test_loop import make_job

    from kdforge.train.sharding import activation_checkpointing, block_modules

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)]))
    blocks = block_modules(model)
    assert blocks == list(model[1])

    def forward(x):
        h = model[0](x)
        for block in model[1]:
            h = torch.tanh(block(h))
        return h.square().sum()

    x = torch.randn(3, 4)
    forward(x).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    switch_off = activation_checkpointing(model)
    assert all("forward" in vars(block) for block in blocks)
    forward(x).backward()
    assert all(torch.allclose(p.grad, g) for p, g in zip(model.parameters(), expected, strict=True))
    switch_off()
    assert not any("forward" in vars(block) for block in blocks)
    with pytest.raises(TrainingError, match="recipe.train.activation_checkpointing: the student has no repeated"):
        activation_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()), where="recipe.train")
    assert block_modules(make_job(tmp_path).module.student)  # kdforge's MLP: its `blocks` list


@needs_gloo
def test_release_gives_back_plain_modules_after_sharding(tmp_path):
    """In one process (a world of 1): shard, train a step, release; the module is the user's class again, with
    plain parameters under the same names, no FSDP hooks, copyable, and computing what it computed sharded."""
    import copy

    from kdforge.llm.data import tiny_causal_lm
    from kdforge.train.sharding import ShardingPlan, release, shard_frozen, shard_trained

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        student = tiny_causal_lm("llama", layers=2, hidden=16, heads=2, vocab_size=40, seed=0)
        teacher = tiny_causal_lm("llama", layers=1, hidden=16, heads=2, vocab_size=40, seed=1)
        names = [n for n, _ in student.named_parameters()]
        holder = torch.nn.Module()
        holder.student = student
        shard_trained(holder, ShardingPlan(), torch.device("cpu"))
        shard_frozen(teacher, ShardingPlan(), torch.device("cpu"))
        ids = torch.randint(0, 40, (2, 6))
        optimizer = torch.optim.SGD(holder.parameters(), lr=0.1)
        student(input_ids=ids).logits.square().mean().backward()
        optimizer.step()
        with torch.no_grad():
            sharded_out = student(input_ids=ids).logits
        release(holder)
        release(teacher)
        shard_frozen(teacher, ShardingPlan(), torch.device("cpu"))  # the next seed's run shards it again
        with torch.no_grad():
            again = teacher(input_ids=ids).logits
        release(teacher)
    finally:
        torch.distributed.destroy_process_group()
    assert type(student).__name__ == "LlamaForCausalLM" and type(teacher).__name__ == "LlamaForCausalLM"
    assert [n for n, _ in student.named_parameters()] == names
    assert all(type(p) is torch.nn.Parameter for p in [*student.parameters(), *teacher.parameters()])
    assert all(not m._forward_pre_hooks and not m._state_dict_pre_hooks for m in student.modules())
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(student)(input_ids=ids).logits, sharded_out)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    with torch.no_grad():
        assert torch.equal(teacher(input_ids=ids).logits, again)


@needs_gloo
def test_bf16_under_fsdp_computes_in_bfloat16_and_keeps_float32_shards(tmp_path):
    from torch.distributed.tensor import DTensor

    from kdforge.llm.data import tiny_causal_lm
    from kdforge.train.sharding import ShardingPlan, release, shard_trained

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        student = tiny_causal_lm("llama", layers=1, hidden=16, heads=2, vocab_size=40, seed=0)
        holder = torch.nn.Module()
        holder.student = student
        shard_trained(holder, ShardingPlan(mixed_precision="bf16"), torch.device("cpu"))
        logits = student(input_ids=torch.randint(0, 40, (2, 5))).logits
        logits.float().square().mean().backward()
        shards = list(student.parameters())
        assert logits.dtype == torch.bfloat16
        assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in shards)
        assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in shards)
        release(holder)
    finally:
        torch.distributed.destroy_process_group()
    assert all(p.dtype == torch.float32 and type(p) is torch.nn.Parameter for p in student.parameters())
