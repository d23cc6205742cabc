"""Faults: SIGKILL and resume, interrupted writes, disk full, read-only output, NaN/inf losses."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file

from kdforge import io
from kdforge.app.run import run_recipe
from kdforge.errors import KDForgeError, RecipeError, TrainingError
from kdforge.losses.kd import KDLoss
from kdforge.recipe import TrainConfig, load_recipe
from kdforge.train import checkpoint as ckpt
from kdforge.train.loop import fit
from tests.test_cli import run_cli, write_recipe
from tests.train.test_loop import make_job

KDFORGE = Path(sys.executable).with_name("kdforge")


# ---------------------------------------------------------------- kill -9 at random points, then --resume

def _kill_recipe(tiny: dict, steps: int, baseline: bool) -> dict:
    data = {**tiny, "baseline": baseline}
    data["teacher"] = {**tiny["teacher"], "train": {**tiny["teacher"]["train"], "max_steps": steps,
                                                    "checkpoint_every": 7}}
    data["train"] = {**tiny["train"], "max_steps": steps, "checkpoint_every": 5}
    return data


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _start(recipe: Path, out: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [str(KDFORGE), "distill", str(recipe), "--out", str(out), "-q"] + (["--resume"] if resume else [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 180) -> bool:
    """SIGKILL `proc` `delay` seconds after `ready()` holds; False when it finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.005)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc.returncode == -signal.SIGKILL


def _kill_and_resume(tmp_path: Path, tiny: dict, kills: int, steps: int, baseline: bool) -> None:
    data = _kill_recipe(tiny, steps, baseline)
    reference = tmp_path / "reference"
    run_recipe(load_recipe(write_recipe(tmp_path, data)), out_dir=reference)

    recipe = Path(write_recipe(tmp_path, data, "killed.yaml"))
    out = tmp_path / "killed"
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    stages = ["teacher", "seed-0/student"] + (["seed-0/scratch"] if baseline else [])
    killed = []
    for i in range(kills):
        stage = stages[min(i * len(stages) // kills, len(stages) - 1)]
        threshold = rng.randint(3, steps)  # log lines (steps and evaluations) the stage has written
        delay = rng.uniform(0, 0.05)
        proc = _start(recipe, out, resume=i > 0)
        log = out / stage / "log.jsonl"
        if _kill_when(proc, lambda log=log, t=threshold: _lines(log) >= t, delay):
            killed.append((stage, threshold, round(delay, 3)))
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    assert len(killed) >= max(2, kills - 1), (seed, killed)
    proc = _start(recipe, out, resume=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, (seed, killed, stderr.decode()[-2000:])

    for stage in stages:
        want, got = load_file(reference / stage / "model.safetensors"), load_file(out / stage / "model.safetensors")
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), (seed, killed, stage, key)
        want_log = [json.loads(line) for line in (reference / stage / "log.jsonl").read_text().splitlines()]
        got_log = [json.loads(line) for line in (out / stage / "log.jsonl").read_text().splitlines()]
        strip = [{k: v for k, v in r.items() if "seconds" not in k} for r in want_log]
        assert [{k: v for k, v in r.items() if "seconds" not in k} for r in got_log] == strip, (seed, killed, stage)
    assert json.loads((out / "report.json").read_text())["student"]["accuracy"] == \
        json.loads((reference / "report.json").read_text())["student"]["accuracy"]
    assert not [p for p in out.rglob("*") if p.name.endswith(io.TEMP_SUFFIX)]


def test_sigkill_at_random_points_then_resume_gives_the_same_student(tmp_path, tiny_recipe_dict):
    _kill_and_resume(tmp_path, tiny_recipe_dict, kills=3, steps=60, baseline=False)


@pytest.mark.slow
def test_sigkill_many_times_with_baseline(tmp_path, tiny_recipe_dict):
    _kill_and_resume(tmp_path, tiny_recipe_dict, kills=6, steps=150, baseline=True)


# ---------------------------------------------------------------- interrupted writes

_WRITER = """
import sys, torch
from kdforge import io
path = sys.argv[1]
big = torch.arange(2_000_000, dtype=torch.float32)
print("ready", flush=True)
for i in range(1, 10**6):
    io.save_tensors(path, {"w": big + i, "i": torch.tensor([i])})
"""


def test_sigkill_while_writing_never_leaves_a_partial_file(tmp_path):
    """A process killed in the middle of writing an 8 MB file leaves the last complete version (or nothing)
    under the real name; its temporary file is hidden, never read, and cleared by remove_stale_temps."""
    target = tmp_path / "module.safetensors"
    rng = random.Random()
    seen = set()
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 120
        while not target.exists():  # one complete file first, then a kill at a random point of later writes
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if target.exists():
            state = load_file(str(target))  # whole and readable
            i = int(state["i"])
            assert torch.equal(state["w"], torch.arange(2_000_000, dtype=torch.float32) + i)
            seen.add(i)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != target.name]
        # only temporary names remain: ours (.NAME.*.tmp) or safetensors' own (.tmpXXXXXX)
        assert all(name.endswith(".tmp") or name.startswith(".tmp") for name in leftovers), leftovers
        io.remove_stale_temps(tmp_path)
        assert [p.name for p in tmp_path.iterdir()] == ([target.name] if target.exists() else [])
    assert seen


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.json"
    io.write_json(target, {"version": 1})

    def half_then_fail(path):
        path.write_text('{"version": ')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.write_with(target, half_then_fail)
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_checkpoint_interrupted_before_its_manifest_is_ignored_and_cleaned(tmp_path, monkeypatch):
    job = make_job(tmp_path, total_steps=6)  # checkpoints at steps 3 and 6
    original = io.write_json

    def die_on_second_manifest(path, data):
        if Path(path).name == "manifest.json" and data["step"] == 6:
            raise KeyboardInterrupt("killed while writing the checkpoint")
        return original(path, data)

    monkeypatch.setattr(io, "write_json", die_on_second_manifest)
    with pytest.raises(KeyboardInterrupt):
        fit(job, Accelerator())
    monkeypatch.setattr(io, "write_json", original)
    folder = tmp_path / "checkpoints"
    assert ckpt.latest_checkpoint(folder).name == "step-00000003"
    assert (folder / ".step-00000006.tmp").is_dir()  # the half-written one, under a name nobody reads
    summary = fit(make_job(tmp_path, total_steps=6), Accelerator(), resume=True)
    assert summary.steps == 6 and ckpt.latest_checkpoint(folder).name == "step-00000006"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000006"]


def test_checkpoint_without_manifest_or_with_truncated_file_is_refused(tmp_path):
    fit(make_job(tmp_path, total_steps=3), Accelerator())
    path = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    weights = path / "module.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(TrainingError, match="module.safetensors is missing or corrupted"):
        ckpt.verify_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(TrainingError, match="has no manifest.json"):
        fit(make_job(tmp_path, total_steps=6), Accelerator(), resume=True)


# ---------------------------------------------------------------- disk full, read-only, occupied output

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_checkpointing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "save_file", _enospc)
    with pytest.raises(KDForgeError, match="no space left on the device. Free some space, or choose another --out"):
        fit(make_job(tmp_path, total_steps=3), Accelerator())
    assert not [p for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()]


def test_disk_full_through_the_cli_exits_2(tmp_path, capsys, monkeypatch, tiny_recipe_dict):
    monkeypatch.setattr(io, "save_file", _enospc)
    path = write_recipe(tmp_path, tiny_recipe_dict)
    code, _, err = run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2 and "no space left on the device" in err and len(err.strip().splitlines()) == 1, err


def test_read_only_file_system_exits_2(tmp_path, capsys, monkeypatch, tiny_recipe_dict):
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    path = write_recipe(tmp_path, tiny_recipe_dict)
    code, _, err = run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2 and "the file system is read-only. Choose a writable --out" in err, err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes through chmod 0o500; test_read_only_file_system_exits_2 simulates it")
def test_output_dir_without_write_permission_exits_2(tmp_path, capsys, tiny_recipe_dict):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        path = write_recipe(tmp_path, tiny_recipe_dict)
        code, _, err = run_cli(["distill", path, "--out", str(locked / "run"), "-q"], capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "permission denied" in err, err


def test_an_existing_run_is_never_overwritten_without_overwrite(tmp_path, capsys, tiny_recipe_dict):
    path = write_recipe(tmp_path, tiny_recipe_dict)
    out = tmp_path / "run"
    assert run_cli(["distill", path, "--out", str(out), "-q"], capsys)[0] in (0, None)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for extra in ([], ["--set", "teacher.train.lr=0.5", "--resume"]):  # a student-side change reuses the teacher
        code, _, err = run_cli(["distill", path, "--out", str(out), "-q", *extra], capsys)
        assert code == 2 and ("already holds a run" in err or "different recipe" in err), err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- NaN/inf: stop, or skip and count

def _nan_at(monkeypatch, steps):
    original, calls = KDLoss.forward, {"n": 0}

    def forward(self, *args):
        calls["n"] += 1
        value = original(self, *args)
        return value * float("nan") if calls["n"] in steps else value

    monkeypatch.setattr(KDLoss, "forward", forward)


def test_nonfinite_skip_skips_and_counts(tmp_path, monkeypatch):
    _nan_at(monkeypatch, {5, 9})
    job = make_job(tmp_path, total_steps=12, nonfinite="skip", max_nonfinite=2)
    summary = fit(job, Accelerator())
    assert summary.steps == 12 and summary.nonfinite_skipped == 2
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    skipped = [r for r in records if "nonfinite" in r]
    assert [(r["step"], r["nonfinite"], r["nonfinite_skipped"]) for r in skipped] == [(5, ["kd"], 1), (9, ["kd"], 2)]
    assert all(torch.isfinite(p).all() for p in job.module.parameters())
    # two of the twelve steps updated nothing: Adam counted ten updates
    optim_state = torch.load(ckpt.latest_checkpoint(tmp_path / "checkpoints") / "optim.pt", weights_only=True)
    assert {int(s["step"]) for s in optim_state["optimizer"]["state"].values()} == {10}
    assert json.loads((ckpt.latest_checkpoint(tmp_path / "checkpoints") / "state.json").read_text()
                      )["loop"]["nonfinite_skipped"] == 2


def test_nonfinite_skip_stops_after_the_cap(tmp_path, monkeypatch):
    _nan_at(monkeypatch, set(range(4, 100)))
    job = make_job(tmp_path, total_steps=12, nonfinite="skip", max_nonfinite=3)
    with pytest.raises(TrainingError, match=r"step 7 in term\(s\) kd .*after 3 skipped step\(s\).*step-00000006"):
        fit(job, Accelerator())


def test_nonfinite_stop_is_the_default_and_says_how_to_skip(tmp_path, monkeypatch):
    assert TrainConfig().nonfinite == "stop"
    _nan_at(monkeypatch, {2})
    with pytest.raises(TrainingError, match="step 2 in term.*Last good checkpoint: none.*train.nonfinite: skip"):
        fit(make_job(tmp_path), Accelerator())
    with pytest.raises(RecipeError):
        load_recipe(write_recipe(tmp_path, yaml.safe_dump({"train": {"nonfinite": "ignore"}})))


def test_resume_clears_what_a_killed_run_left_half_written(tmp_path, capsys, tiny_recipe_dict):
    path = write_recipe(tmp_path, tiny_recipe_dict)
    out = tmp_path / "run"
    assert run_cli(["distill", path, "--out", str(out), "-q"], capsys)[0] in (0, None)
    stale = [out / "seed-0" / "student" / ".model.safetensors.x1y2.tmp", out / ".report.json.a8b9.tmp",
             out / "teacher" / "checkpoints" / ".step-00000099.tmp"]
    stale[0].write_bytes(b"half a file")
    stale[1].write_text('{"student": ')
    stale[2].mkdir()
    (stale[2] / "module.safetensors").write_bytes(b"")
    code, _, err = run_cli(["distill", path, "--out", str(out), "-q", "--resume"], capsys)
    assert code in (0, None), err
    assert not [p for p in stale if p.exists()]
    assert json.loads((out / "report.json").read_text())["student"]["accuracy"] > 0


def test_stale_temporaries_of_both_kinds_are_removed(tmp_path):
    (tmp_path / ".model.safetensors.ab12cd.tmp").write_text("partial")  # ours
    (tmp_path / ".tmpX1y2Z3").write_text("partial")  # safetensors' own temporary
    (tmp_path / "model.safetensors").write_text("whole")
    (tmp_path / ".tmpdir_kept").mkdir()  # not a temporary name: longer than tempfile's six characters
    removed = io.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == [".model.safetensors.ab12cd.tmp", ".tmpX1y2Z3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmpdir_kept", "model.safetensors"]
