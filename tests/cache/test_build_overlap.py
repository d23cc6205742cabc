"""The cache build copies outputs on a writer thread while the teacher computes the next batch: bounded (at most
two batches wait), in order (a chunk is recorded after its rows), failures raised in the caller, throughput
logged."""

import gc
import json
import logging
import threading
import weakref

import pytest
import torch
from torch import nn

import kdforge.cache.store as store
from kdforge.cache.hashing import teacher_fingerprint
from kdforge.cache.store import CacheSettings, CacheStore, fingerprint_splits, partial_dir, shard_chunks, write_cache
from kdforge.data.tensors import TensorData


class Teacher(nn.Module):
    """Counts its forwards and keeps a weak reference to every output, to see how many are alive at once."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(6, 5)
        self.outputs: list[weakref.ref] = []
        self.most_alive = 0

    def forward(self, x):
        gc.collect()
        self.most_alive = max(self.most_alive, sum(ref() is not None for ref in self.outputs))
        out = self.net(x)
        self.outputs.append(weakref.ref(out))
        return out


def _build(tmp_path, teacher, n=64, **kw):
    data = {"train": TensorData({"x": torch.randn(n, 6, generator=torch.Generator().manual_seed(0))})}
    fingerprints = {"teacher": teacher_fingerprint(teacher), "data": fingerprint_splits(data, ["x"])}
    return write_cache(teacher, data, tmp_path / "cache", CacheSettings(dtype="float32"), fingerprints, ["x"],
                       batch_size=4, chunk_rows=8, **kw), data


def test_outputs_are_copied_on_the_writer_thread_with_at_most_two_batches_waiting(tmp_path, monkeypatch):
    threads = []
    original = store._to_numpy
    monkeypatch.setattr(store, "_to_numpy", lambda t: threads.append(threading.current_thread().name) or original(t))
    teacher = Teacher()
    status, data = _build(tmp_path, teacher)
    assert status == "built"
    assert threads and set(threads) == {"kdforge-cache-writer"}
    # the batch in the teacher, the one being copied and at most two queued: never the whole split's outputs
    assert teacher.most_alive <= 3
    logits = CacheStore(tmp_path / "cache").split("train").arrays["logits"]
    with torch.no_grad():
        x = data["train"].tensors["x"]
        assert torch.equal(logits, torch.cat([teacher.net(x[i:i + 4]) for i in range(0, 64, 4)]))


def test_a_failing_write_is_raised_by_the_build_and_only_finished_chunks_are_recorded(tmp_path, monkeypatch):
    calls = []
    original = store._store_rows

    def fails_on_the_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        original(*args)

    monkeypatch.setattr(store, "_store_rows", fails_on_the_fifth)
    with pytest.raises(OSError, match="No space"):
        _build(tmp_path, Teacher())
    recorded = json.loads((partial_dir(tmp_path / "cache") / "progress.shard-0.json").read_text())["done"]
    assert recorded == {"train": [0, 8]}  # batches 1-4 make chunks 0 and 8; the fifth batch's chunk is not kept

    monkeypatch.setattr(store, "_store_rows", original)
    teacher = Teacher()
    assert _build(tmp_path, teacher)[0] == "resumed"
    assert len(teacher.outputs) == 16 - 4  # the two recorded chunks are not computed again


def test_the_build_logs_its_throughput(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="kdforge"):
        _build(tmp_path, Teacher())
    assert any("cache: train: 64 rows in" in r.message and "rows/s" in r.message and "tokens/s" in r.message
               for r in caplog.records)


def test_shards_are_contiguous_runs_of_chunks_that_cover_the_split_once():
    for rows, chunk, world in [(90, 8, 2), (37, 8, 3), (5, 8, 4), (1000, 7, 5)]:
        shards = [shard_chunks(rows, chunk, rank, world) for rank in range(world)]
        flat = [c for shard in shards for c in shard]
        assert flat == shard_chunks(rows, chunk)  # in order, each chunk once, the one-process grid
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_checksums_hashed_while_writing_are_the_files_checksums(tmp_path, monkeypatch):
    hashed_at_the_end = []
    original = store.io.sha256_file
    monkeypatch.setattr(store.io, "sha256_file", lambda path: hashed_at_the_end.append(path.name) or original(path))
    _build(tmp_path, Teacher(), n=61)  # a last chunk of 5 rows: the running hash must stop at the file's end
    assert hashed_at_the_end == ["ids.npy", "hashes.npy"]  # the logits were hashed chunk by chunk
    manifest = store.read_manifest(tmp_path / "cache")
    assert manifest["files"]["train/logits.npy"]["sha256"] == original(tmp_path / "cache" / "train" / "logits.npy")
    CacheStore(tmp_path / "cache")  # and the store opens with its checksums verified
