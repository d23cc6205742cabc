"""The build's array files: rows written in place by position, the SHA-256 fed from the bytes written when they
come in order, and a store just built opened without reading its files back."""

import numpy as np
import pytest
import torch
from torch import nn

import kdforge.cache.store as store
from kdforge import io
from kdforge.cache.array_file import ArrayFile
from kdforge.cache.hashing import teacher_fingerprint
from kdforge.cache.store import CacheError, CacheSettings, CacheStore, fingerprint_splits, write_cache
from kdforge.data.tensors import TensorData


def _allocated(tmp_path, dtype=np.float32, shape=(10, 3)):
    path = tmp_path / "a.npy"
    store._allocate(path, np.dtype(dtype), shape)
    return path


def test_rows_land_where_a_memory_map_reads_them_and_the_running_hash_is_the_files(tmp_path):
    path = _allocated(tmp_path)
    rows = np.arange(30, dtype=np.float32).reshape(10, 3)
    file = ArrayFile(path, hash_in_order=True)
    for lo in (0, 4, 8):
        file.write(lo, rows[lo:lo + 4])
    file.sync()
    assert file.digest() == io.sha256_file(path)
    file.close()
    assert np.array_equal(np.load(path), rows)


def test_rows_out_of_order_give_no_digest_but_the_right_bytes(tmp_path):
    path = _allocated(tmp_path)
    rows = np.arange(30, dtype=np.float32).reshape(10, 3)
    file = ArrayFile(path, hash_in_order=True)
    file.write(5, rows[5:])
    file.write(0, rows[:5])
    assert file.digest() is None  # the bytes came out of order: the file is hashed at the end instead
    file.close()
    assert np.array_equal(np.load(path), rows)


def test_an_unfinished_file_has_no_digest(tmp_path):
    file = ArrayFile(_allocated(tmp_path), hash_in_order=True)
    file.write(0, np.ones((4, 3), np.float32))
    assert file.digest() is None
    file.close()


@pytest.mark.parametrize("lo, rows", [(0, np.ones((4, 2), np.float32)), (8, np.ones((4, 3), np.float32)),
                                      (-1, np.ones((1, 3), np.float32)), (0, np.ones((2, 3), np.float64))])
def test_rows_that_do_not_fit_are_refused_not_written(tmp_path, lo, rows):
    path = _allocated(tmp_path)
    file = ArrayFile(path, hash_in_order=False)
    with pytest.raises(ValueError, match="a.npy"):
        file.write(lo, rows)
    file.close()
    assert not np.load(path).any()


class _Ragged(nn.Module):
    """A teacher whose output width depends on the batch: its rows cannot share one array."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 3)

    def forward(self, x):
        out = self.net(x)
        return out if len(x) != 4 else torch.cat([out, out], dim=-1)


def _build(tmp_path, teacher, n=12):
    data = {"train": TensorData({"x": torch.randn(n, 4, generator=torch.Generator().manual_seed(0))})}
    prints = {"teacher": teacher_fingerprint(teacher), "data": fingerprint_splits(data, ["x"])}
    return write_cache(teacher, data, tmp_path / "cache", CacheSettings(dtype="float32"), prints, ["x"],
                       batch_size=4, chunk_rows=8)


def test_a_teacher_whose_output_shape_follows_the_batch_is_named(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(CacheError, match="output shape must not depend on the batch"):
        _build(tmp_path, _Ragged())


def test_a_store_just_built_opens_without_reading_its_files_again_until_one_changes(tmp_path, monkeypatch):
    torch.manual_seed(0)
    _build(tmp_path, nn.Linear(4, 3))
    hashed = []
    original = io.sha256_file
    monkeypatch.setattr(store.io, "sha256_file", lambda path: hashed.append(path.name) or original(path))
    CacheStore(tmp_path / "cache")
    assert hashed == []  # the build computed every checksum from what it wrote
    logits = tmp_path / "cache" / "train" / "logits.npy"
    # the array files are dated a second before the manifest written after them: a write after the build, even
    # within one tick of the file system's clock, gives a file another time than the one the build vouched for
    assert logits.stat().st_mtime_ns <= (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns - 900_000_000
    raw = bytearray(logits.read_bytes())
    raw[-1] ^= 0xFF
    logits.write_bytes(bytes(raw))  # at once: within the file system's timestamp tick of the build, often
    with pytest.raises(CacheError, match="logits.npy is corrupted"):
        CacheStore(tmp_path / "cache")
    CacheStore(tmp_path / "cache", verify=False)  # sizes only: still opens (the caller chose not to verify)
