"""A cache built by 2 processes under `torchrun` (gloo, CPU) is the cache one process builds, and a 2-process
build killed part-way resumes each process's shard from its own progress record."""

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdforge.cache.store import partial_dir, read_manifest

TORCHRUN = Path(sys.executable).with_name("torchrun")

# The build each process runs. Rank 1 raises at forward DIE_AFTER + 1 when asked (its teacher "dies"); by then
# it has finished some chunks, which its progress file must keep. Splits of 90 and 37 rows in chunks of 8 and
# batches of 4: rank 1 gets train chunks 6-11 (11 forwards) and test chunks 2-4 (6 forwards).
SCRIPT = '''
import json, os, sys

import torch
from torch import nn

from kdforge.cache.hashing import teacher_fingerprint
from kdforge.cache.store import CacheSettings, fingerprint_splits, write_cache
from kdforge.data.tensors import TensorData


class Teacher(nn.Module):
    def __init__(self, die_after=0):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(6, 32), nn.ReLU())
        self.head = nn.Linear(32, 7)
        self.calls, self.die_after = 0, die_after

    def forward(self, x):
        self.calls += 1
        if self.die_after and self.calls > self.die_after:
            raise SystemExit(f"teacher killed at forward {self.calls}")
        return self.head(self.body(x))


def splits():
    g = torch.Generator().manual_seed(1)
    return {"train": TensorData({"x": torch.randn(90, 6, generator=g)}),
            "test": TensorData({"x": torch.randn(37, 6, generator=g)})}


def build(directory, rank=0, world=1, barrier=None, die_after=0):
    torch.set_num_threads(1)
    teacher, data = Teacher(die_after), splits()
    fingerprints = {"teacher": teacher_fingerprint(teacher), "data": fingerprint_splits(data, ["x"])}
    status = write_cache(teacher, data, directory, CacheSettings(features=("hidden",)), fingerprints, ["x"],
                         {"hidden": "body"}, batch_size=4, chunk_rows=8, rank=rank, world=world, barrier=barrier)
    return status, teacher.calls


if __name__ == "__main__":
    from kdforge.processes import process_state

    state = process_state()
    die = int(os.environ.get("DIE_AFTER", "0")) if state.process_index == 1 else 0
    status, calls = build(sys.argv[1], state.process_index, state.num_processes, state.wait_for_everyone, die)
    print(json.dumps({"rank": state.process_index, "world": state.num_processes, "status": status,
                      "calls": calls}), flush=True)
'''

needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _torchrun(script: Path, directory: Path, die_after: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIE_AFTER": str(die_after)}
    return subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(script), str(directory)],
                          capture_output=True, text=True, timeout=300, env=env)


def _reports(proc: subprocess.CompletedProcess) -> dict[int, dict]:
    # the two processes share stdout: their lines can run into each other, so read every {...} wherever it is
    lines = [json.loads(found) for found in re.findall(r"\{[^{}]*\}", proc.stdout)]
    return {line["rank"]: line for line in lines}


def _one_process(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "build.py"
    script.write_text(SCRIPT)
    reference = tmp_path / "one"
    status, _ = runpy.run_path(str(script))["build"](reference)
    assert status == "built"
    return script, reference


def _same_store(two: Path, one: Path) -> None:
    files = read_manifest(one)["files"]
    assert read_manifest(two)["files"] == files  # shapes, dtypes, sizes and SHA-256 of every array
    for rel in files:
        assert (two / rel).read_bytes() == (one / rel).read_bytes(), rel
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())  # no progress files
    assert not partial_dir(two).exists()


@needs_gloo
def test_two_processes_build_the_one_process_cache(tmp_path):
    script, reference = _one_process(tmp_path)
    proc = _torchrun(script, tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = _reports(proc)
    assert {r["world"] for r in reports.values()} == {2} and set(reports) == {0, 1}
    assert reports[1]["calls"] == 17 and reports[0]["calls"] == 2 + 12 + 4  # its shard, plus one probe a split
    _same_store(tmp_path / "two", reference)


@needs_gloo
@pytest.mark.slow
def test_a_killed_two_process_build_resumes_each_shard(tmp_path):
    script, reference = _one_process(tmp_path)
    target = tmp_path / "two"
    killed = _torchrun(script, target, die_after=5)
    assert killed.returncode != 0 and "teacher killed at forward 6" in killed.stderr
    assert not target.exists() and (partial_dir(target) / "progress.shard-1.json").is_file()
    recorded = json.loads((partial_dir(target) / "progress.shard-1.json").read_text())["done"]
    assert recorded == {"train": [48, 56]}  # the two chunks finished before the kill; the third was cut short

    resumed = _torchrun(script, target)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reports = _reports(resumed)
    assert reports[0]["status"] == "resumed"
    assert reports[1]["calls"] == 17 - 4  # rank 1 redoes none of its recorded chunks
    assert reports[0]["calls"] <= 16  # no probes, no allocation: rank 0 only finishes what it had not recorded
    _same_store(target, reference)
