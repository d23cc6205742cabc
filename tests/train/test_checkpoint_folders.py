"""How a checkpoint folder comes into being, the same for the whole (`save_checkpoint`) and the sharded
(`save_sharded_checkpoint`, here under a gloo group of one process) writer: written under a temporary name with the
leftovers of interrupted writes removed first, a manifest with every file's checksum, renamed into place, `latest`
pointing at it, only the newest `keep` kept, and nothing left behind by a write that fails."""

import errno
import json
import os

import pytest
import torch

from kdforge import io
from kdforge.errors import KDForgeError
from kdforge.train import checkpoint as ckpt

needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


@pytest.fixture(params=["whole", pytest.param("sharded", marks=needs_gloo)])
def writer(request, tmp_path):
    """The writer under test; the sharded one inside a process group of one (it checksums `sharded/` too)."""
    if request.param == "whole":
        yield ckpt.save_checkpoint, {}
        return
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        yield ckpt.save_sharded_checkpoint, {"layout": ckpt.SHARDED_LAYOUT, "world_size": 1}
    finally:
        torch.distributed.destroy_process_group()


def _training_state():
    torch.manual_seed(0)
    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    module(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return module, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _save(writer, folder, step, keep):
    save, _ = writer
    module, optimizer, scheduler = _training_state()
    return save(folder, module, optimizer, scheduler, ckpt.LoopState(step=step), None, keep=keep)


def test_the_newest_keep_checkpoints_stay_and_latest_names_the_newest(writer, tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        _save(writer, folder, step, keep=2)
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000003", "step-00000004"]
    assert ckpt.latest_checkpoint(folder) == folder / "step-00000004"
    _save(writer, folder, 5, keep=1)
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000005"]


def test_the_manifest_checksums_every_file_under_one_layout(writer, tmp_path):
    path = _save(writer, tmp_path / "checkpoints", 7, keep=1)
    manifest = json.loads((path / "manifest.json").read_text())
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert list(manifest) == ["format", "version", "step", *writer[1], "files"]
    assert manifest == {"format": ckpt.CHECKPOINT_FORMAT, "version": ckpt.CHECKPOINT_VERSION, "step": 7, **writer[1],
                        "files": {name: io.sha256_file(path / name) for name in files}}
    assert ckpt.verify_checkpoint(path) == manifest


def test_leftovers_of_an_interrupted_write_are_removed_by_the_next_one(writer, tmp_path):
    folder = tmp_path / "checkpoints"
    _save(writer, folder, 1, keep=3)
    (folder / ".step-00000002.tmp").mkdir()  # a kill while writing step 2's folder
    (folder / ".step-00000002.tmp" / "module.safetensors").write_bytes(b"half")
    (folder / ".latest.x1y2.tmp").write_text("step-00000002\n")  # a kill while pointing `latest` at it
    _save(writer, folder, 3, keep=3)
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000001", "step-00000003"]


def test_a_write_that_fails_leaves_no_folder_and_names_the_checkpoint(writer, tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    _save(writer, folder, 1, keep=3)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io, "write_torch", full)  # optim.pt / scheduler.pt: written by both after the weights
    with pytest.raises(KDForgeError, match="step-00000002.*no space left on the device"):
        _save(writer, folder, 2, keep=3)
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000001"]
    assert ckpt.latest_checkpoint(folder) == folder / "step-00000001"
