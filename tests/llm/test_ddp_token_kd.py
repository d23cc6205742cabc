"""Token-level KD under torchrun with 2 CPU processes (gloo) matches one process with the same global batch, to
float32 rounding."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _losses(folder: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_two_processes_match_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = subprocess.run([sys.executable, "-m", "tests.llm.ddp_token_kd", str(tmp_path / "one")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "tests.llm.ddp_token_kd",
                          str(tmp_path / "two")], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    for folder, size in (("one", 1), ("two", 2)):  # torchrun really started two processes
        assert json.loads((tmp_path / folder / "world.json").read_text())["world_size"] == size
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 4
    # each process's token mean weighted by its share of the global batch's counted tokens: the one-process
    # objective, to float32 rounding (rows with cut texts and short ones split unevenly in tokens)
    losses = max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True))
    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    weights = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    print(f"max |loss diff| {losses:.2g}, max |weight diff| {weights:.2g}")
    assert losses < 1e-6 and weights < 1e-5, (a, b, weights)
