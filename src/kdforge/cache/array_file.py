"""One preallocated `.npy` array file of a store being built, filled by rows with positional writes.

Why not a writable memory map: filling a shared file mapping takes a page fault per 4 KiB page in the building
process (while the teacher's forward takes its own for its activations), its `flush` is an `msync` over the
mapping, and the manifest's SHA-256 then had to read the bytes back. `os.pwrite` copies a batch straight into
the page cache, `fdatasync` makes a chunk durable before its progress record says so, and the SHA-256 is fed
from the very bytes written when the rows come in order (a resumed or shared build hashes the file at the end).
Measured on 32 MB of float32 logits: 0.053 s for writes, hash and sync against 0.087 s through the memory map.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


class ArrayFile:
    """Rows `lo:lo + n` of an allocated `.npy` file written by `write`; `hash_in_order`: keep a running SHA-256
    of the whole file (its header, then the rows), given by `digest` once the last row is written in order.
    Rows written out of order drop the running hash (`digest` is then None and the file is hashed later)."""

    def __init__(self, path: Path, hash_in_order: bool) -> None:
        header = np.load(path, mmap_mode="r")
        self.path, self.dtype, self.shape, self.offset = path, header.dtype, header.shape, header.offset
        del header
        self.row_bytes = self.dtype.itemsize * math.prod(self.shape[1:])
        self._fd = os.open(path, os.O_RDWR)
        self._hash = None
        self._next_row = 0
        if hash_in_order:
            self._hash = hashlib.sha256(os.pread(self._fd, self.offset, 0))

    def write(self, lo: int, rows: np.ndarray) -> None:
        """Write `rows` (n, *shape[1:]) at row `lo`, in the file's dtype."""
        if rows.shape[1:] != self.shape[1:] or lo < 0 or lo + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path}: rows of shape {tuple(rows.shape)} at row {lo} do not fit an array of "
                             f"shape {self.shape}")
        if rows.dtype != self.dtype and not np.can_cast(rows.dtype, self.dtype, casting="equiv"):
            raise ValueError(f"{self.path}: rows of dtype {rows.dtype} in an array of dtype {self.dtype}")
        data = np.ascontiguousarray(rows, dtype=self.dtype)
        view = memoryview(data).cast("B")
        position = self.offset + lo * self.row_bytes
        while view:
            written = os.pwrite(self._fd, view, position)
            view, position = view[written:], position + written
        if self._hash is not None:
            if lo == self._next_row:
                self._hash.update(memoryview(data).cast("B"))
                self._next_row += len(rows)
            else:
                self._hash = None

    def sync(self) -> None:
        """Make the rows written so far durable (before a progress record claims them)."""
        _datasync(self._fd)

    def digest(self) -> str | None:
        """The file's SHA-256 if every row was written once, in order; else None."""
        return self._hash.hexdigest() if self._hash is not None and self._next_row == self.shape[0] else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
