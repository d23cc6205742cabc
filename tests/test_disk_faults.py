"""A real full disk, a failing disk and the file modes of what kdforge writes (issue 16, items 2 and 8).

A 64 KiB tmpfs is mounted where the machine allows it (root, Linux); the faults that need no mount are injected
where the bytes are written: safetensors' own (Rust) writer, which reports a full disk as a `SafetensorError`
("os error 28"), torch's writer, numpy's arrays of the teacher cache, and EIO.
"""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

from kdforge import io
from kdforge.errors import KDForgeError
from tests.cache.test_pipeline import iris_recipe
from tests.test_cli import run_cli, write_recipe

KDFORGE = Path(sys.executable).with_name("kdforge")


def _temps(folder: Path) -> list[Path]:
    """Temporary files and folders a failed write could leave: ours, safetensors' and the cache's."""
    patterns = ("*.tmp", ".tmp*", "*.partial", "*.repair")
    return sorted({p for pattern in patterns for p in folder.rglob(pattern)})


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real ENOSPC from the kernel. Skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux; the fault-injected tests below cover the same paths")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused here ({done.stderr.strip()}); the fault-injected tests cover the paths")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _one_line_exit_2(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.strip()
    assert done.returncode == 2, (done.returncode, err[-3000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("teacher_hidden", "filler_kib"), [
    (32, 128),   # the disk fills while a checkpoint's state.json is written (its folder was left behind)
    (32, 208),   # ... earlier, in the teacher's first checkpoint
    (4096, 0),   # a 115 KiB teacher: torch's own writer met the full disk (a 75-line RuntimeError traceback)
    (4096, 128),  # ... with less room, in the first safetensors or torch write of the teacher
])
def test_a_real_full_disk_during_distill_exits_2_and_leaves_no_temp(small_disk, tmp_path, tiny_recipe_dict,
                                                                   teacher_hidden, filler_kib):
    tiny_recipe_dict["teacher"]["args"] = {"hidden": [teacher_hidden]}
    recipe = write_recipe(tmp_path, tiny_recipe_dict)
    if filler_kib:
        (small_disk / "filler").write_bytes(b"\0" * (filler_kib * 1024))
    done = subprocess.run([str(KDFORGE), "distill", recipe, "--out", str(small_disk / "run"), "-q"],
                          capture_output=True, text=True, timeout=300)
    err = _one_line_exit_2(done)
    assert "no space left on the device" in err
    assert _temps(small_disk) == []


def test_a_real_full_disk_during_cache_exits_2_and_leaves_no_temp(small_disk, tmp_path):
    recipe = iris_recipe(tmp_path, "teacher.safetensors")
    filler = small_disk / "filler"  # leave too little room for the store (its arrays are a few KiB)
    filler.write_bytes(b"\0" * (248 * 1024))
    done = subprocess.run([str(KDFORGE), "cache", str(recipe), "--dir", str(small_disk / "cache"), "-q"],
                          capture_output=True, text=True, timeout=300)
    err = _one_line_exit_2(done)
    assert "no space left on the device" in err
    assert _temps(small_disk) == [] and not (small_disk / "cache").exists()


def _safetensors_enospc(*args, **kwargs):
    raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space "
                          "left on device\" }) (os error 28)")


def test_safetensors_own_disk_full_error_is_one_line_and_leaves_no_checkpoint_temp(tmp_path, capsys, monkeypatch,
                                                                                    tiny_recipe_dict):
    monkeypatch.setattr(io, "save_file", _safetensors_enospc)
    path = write_recipe(tmp_path, tiny_recipe_dict)
    code, _, err = run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2 and "no space left on the device" in err and len(err.strip().splitlines()) == 1, err
    assert _temps(tmp_path / "run") == []


def test_an_io_error_while_checkpointing_is_one_line(tmp_path, capsys, monkeypatch, tiny_recipe_dict):
    def eio(self, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(Path, "write_bytes", eio)  # io.write_torch (optim.pt) writes through it
    path = write_recipe(tmp_path, tiny_recipe_dict)
    code, _, err = run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2 and "input/output error" in err and len(err.strip().splitlines()) == 1, err
    assert _temps(tmp_path / "run") == []


def test_a_full_disk_while_writing_cache_arrays_leaves_no_partial_store(tmp_path, capsys, monkeypatch):
    recipe = iris_recipe(tmp_path, "teacher.safetensors")

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    code, _, err = run_cli(["cache", str(recipe), "--quiet"], capsys)
    assert code == 2 and "no space left on the device" in err and len(err.strip().splitlines()) == 1, err
    assert _temps(tmp_path) == [] and not (tmp_path / "cache").exists()


def test_report_never_suggests_an_out_option_it_does_not_have(tmp_path, capsys, monkeypatch, tiny_recipe_dict):
    path = write_recipe(tmp_path, tiny_recipe_dict)
    assert run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)[0] == 0
    monkeypatch.setattr(io, "save_file", _safetensors_enospc)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    code, _, err = run_cli(["report", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2 and "no space left" in err and "--out" not in err and "RUN_DIR" in err, err


def test_outputs_honour_the_umask(tmp_path, capsys, tiny_recipe_dict):
    old = os.umask(0o022)
    try:
        path = write_recipe(tmp_path, tiny_recipe_dict)
        assert run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)[0] == 0
        modes = {p.relative_to(tmp_path / "run").as_posix(): p.stat().st_mode & 0o777
                 for p in (tmp_path / "run").rglob("*") if p.is_file()}
        assert modes and set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items() if v != 0o644}
        os.umask(0o077)
        io.write_json(tmp_path / "private.json", {})
        assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_a_pickle_is_refused_without_passing_on_torchs_unsafe_advice(tmp_path):
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"w": Hostile()}, tmp_path / "weights.pt")
    with pytest.raises(KDForgeError) as info:
        io.load_weights_file(tmp_path / "weights.pt", "recipe.teacher.checkpoint")
    text = str(info.value)
    assert "never unpickles" in text and "False" not in text, text  # never PyTorch's "weights_only=False" advice
    assert not marker.exists()


def test_json_written_by_io_is_whole_on_a_full_disk(tmp_path, monkeypatch):
    io.write_json(tmp_path / "a.json", {"v": 1})

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(KDForgeError, match="no space left"):
        io.write_json(tmp_path / "a.json", {"v": 2})
    monkeypatch.undo()
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 1} and _temps(tmp_path) == []
    assert np.array_equal(np.zeros(1), np.zeros(1))
