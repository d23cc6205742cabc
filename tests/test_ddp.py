"""Scale-out: the same recipe under `torchrun` with 2 CPU processes (gloo) matches one process.

`accelerate launch --cpu --num_processes 2` silently runs one process; torchrun really starts two, and the
run records the world size it saw (environment.json), which the test asserts.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdforge import io
from kdforge.app.run import run_recipe
from kdforge.recipe import load_recipe

TORCHRUN = Path(sys.executable).with_name("torchrun")
KDFORGE = Path(sys.executable).with_name("kdforge")


def _recipe(folder: Path, tiny: dict) -> Path:
    data = {**tiny, "baseline": False}
    # the teacher is built once by the main process and read by both; on iris's 74 training rows its batches
    # of 73 end with a 1-row batch, so one process gets no rows at all; the student's batches of 11 split 6 / 5
    data["teacher"] = {**tiny["teacher"], "cache": "cache",
                       "train": {**tiny["teacher"]["train"], "batch_size": 73, "epochs": 6}}
    data["train"] = {**tiny["train"], "checkpoint_every": 4, "batch_size": 11}
    folder.mkdir(parents=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_two_cpu_processes_match_one(tmp_path, tiny_recipe_dict):
    single = tmp_path / "one" / "run"
    run_recipe(load_recipe(_recipe(tmp_path / "one", tiny_recipe_dict)), out_dir=single)

    recipe = _recipe(tmp_path / "two", tiny_recipe_dict)
    double = tmp_path / "two" / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "--no-python", str(KDFORGE),
                           "distill", str(recipe), "--out", str(double), "-q"],
                          capture_output=True, text=True, timeout=300, env=env)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"torchrun, 2 processes: {seconds:.1f} s")

    assert json.loads((double / "environment.json").read_text())["world_size"] == 2
    assert json.loads((single / "environment.json").read_text())["world_size"] == 1
    assert proc.stdout.count("Report:") == 1  # both processes ran the whole pipeline; the main one reports ...
    for stage in ("teacher", "seed-0/student"):
        one, two = _log(single / stage / "log.jsonl"), _log(double / stage / "log.jsonl")
        # ... but one process wrote: each step once, and the loss is the global batch's mean
        assert [r["step"] for r in two] == [r["step"] for r in one]
        losses = [(a["train/loss"], b["train/loss"]) for a, b in zip(one, two, strict=True) if "train/loss" in a]
        assert len(losses) >= 10
        assert max(abs(a - b) for a, b in losses) < 1e-4, (stage, losses)
        w1, w2 = load_file(single / stage / "model.safetensors"), load_file(double / stage / "model.safetensors")
        assert w1.keys() == w2.keys()
        diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
        assert diff < 1e-4, (stage, diff)
        print(f"{stage}: {len(losses)} steps, max |loss diff| {max(abs(a - b) for a, b in losses):.2g}, "
              f"max |weight diff| {diff:.2g}")
    # the teacher cache was built once, completely, and the students trained from it
    assert (tmp_path / "two" / "cache" / "manifest.json").is_file()
    assert not list((tmp_path / "two").glob("cache*.partial*"))
    # no process left a half-written file behind
    assert not [p for p in double.rglob("*") if p.name.endswith(io.TEMP_SUFFIX)]
    assert (double / "report.json").is_file()


def test_only_rank_0_writes(tmp_path, monkeypatch):
    """The non-main processes of a distributed run write nothing into the run folder."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    assert not io.is_writer()
    io.write_json(tmp_path / "run" / "report.json", {"a": 1})
    io.save_tensors(tmp_path / "run" / "model.safetensors", {"w": torch.ones(2)})
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    assert io.is_writer()
    io.write_json(tmp_path / "run" / "report.json", {"a": 1})
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == {"a": 1}
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["report.json"]


def test_accelerate_example_config_loads():
    """examples/accelerate/ddp.yaml is a config `accelerate launch --config_file` accepts."""
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(Path(__file__).resolve().parents[1] / "examples" / "accelerate" / "ddp.yaml")
    assert config.distributed_type == "MULTI_GPU" and config.num_processes == 2


def test_sharded_training_is_refused_up_front(tmp_path, monkeypatch):
    """DeepSpeed owns the model, loop and checkpoints: a clear error up front (FSDP2: tests/train/test_fsdp.py)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from kdforge.errors import TrainingError
    from kdforge.train.loop import fit
    from tests.train.test_loop import make_job

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.DEEPSPEED))
    with pytest.raises(TrainingError, match="DEEPSPEED, which kdforge's training loop does not support.*ddp.yaml"):
        fit(make_job(tmp_path, total_steps=2), Accelerator())
    assert not (tmp_path / "checkpoints").exists()
