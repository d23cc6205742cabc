"""The teacher-output store: a folder of memory-mapped `.npy` arrays, one set per split, plus a manifest.

Layout (format `kdforge-teacher-cache` v2; v1 is the same without the sparse formats)::

    DIR/manifest.json                 format, version, fingerprints, settings, every file's shape/dtype/sha256
    DIR/<split>/ids.npy               (N,) int64 sample ids, in the order rows were written
    DIR/<split>/hashes.npy            (N,) int64 content hash of each sample's inputs (kdforge.cache.hashing)
    DIR/<split>/logits.npy            (N, ..., K) full logits                               [logits: full]
    DIR/<split>/topk_values.npy       (N, ..., k) largest logits, float16 (bfloat16 as raw uint16 bits)
    DIR/<split>/topk_indices.npy      (N, ..., k) their indices, int16 (V <= 32768) or int32  [logits: topk]
    DIR/<split>/logsumexp.npy         (N, ...) float32 log-sum-exp of the full logits         [logits: topk]
    DIR/<split>/samples_*.npy, entropy.npy    sampled token ids and counts       [logits: sampled, v2]
    DIR/<split>/tail_*.npy            top-k ids, log-probability codes, tail mass         [logits: topk_tail, v2]
    DIR/<split>/feat.<tap>.npy        (N, ...) captured intermediate features             [features: ...]

Why `.npy` + `numpy` memmap: a plain header plus raw bytes, memory-mapped with `np.load(mmap_mode=...)` and
wrapped by `torch.from_numpy` without a copy, so a shuffled batch is one torch gather over pages the OS
caches. Arrays can be preallocated and filled chunk by chunk, which is what makes an interrupted build
resumable. safetensors (already a dependency) is read-only memory-mapped in the same way but needs every
tensor's size in one header written last, so it cannot be filled in place; Arrow would add pyarrow as a new
dependency for nothing we need here (no nested types, no columnar queries).

Writes go to `.<DIR name>.partial/` next to DIR: `progress.json` lists the allocated arrays, and each finished
chunk of rows is written (`cache.array_file`), made durable, then recorded in the writing process's
`progress.shard-<rank>.json` (several processes can build one store, each its own chunks); a later run with the
same fingerprint builds only the chunks no progress file records (another fingerprint starts over). When every
split is written, the manifest (with SHA-256 of every file) is written and the folder is renamed to DIR. Readers
check the format, the sizes and, unless told not to, the checksums.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdforge import io
from kdforge.cache.array_file import ArrayFile
from kdforge.cache.formats import (
    FORMAT_KEYS,
    FORMAT_SETTINGS,
    FORMATS,
    INDEX_CODES,
    SPARSE_FORMATS,
    VALUE_CODES,
    encode,
)
from kdforge.cache.hashing import HASH_VERSION, TeacherInputs, content_keys, data_fingerprint, row_hashes
from kdforge.cache.topk import TopK, compress_topk
from kdforge.capture import Capture
from kdforge.data.tensors import TensorData
from kdforge.errors import KDForgeError
from kdforge.models.forward import call_model, logits_of

logger = logging.getLogger("kdforge")

CACHE_FORMAT = "kdforge-teacher-cache"
CACHE_VERSION = 2  # v2: the sparse formats and the tokenizer/alignment record; v1 stores still load
READ_VERSIONS = (1, 2)
SETTINGS_VERSION = 1  # part of the settings fingerprint: unchanged, so v1 stores keep theirs
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CacheError(KDForgeError, ValueError):
    """A teacher cache is missing, incomplete, corrupted, or was built for another teacher, data or settings."""


@dataclass(frozen=True)
class CacheSettings:
    """What the store holds. `k` and the value dtype matter only for their mode; features are tap names."""

    logits: str = "full"  # one of formats.FORMATS; which settings below each reads: formats.FORMAT_SETTINGS
    k: int = 64
    dtype: str = "float32"
    features: tuple[str, ...] = ()
    samples: int = 12  # sampled: draws per position
    proposal_temperature: float = 1.0  # sampled: draws from the teacher at this temperature
    seed: int = 0  # sampled: the draws' seed
    values: str = "uint16"  # topk_tail: log-probability codes (float16 | uint16 | uint8)
    indices: str = "packed"  # sampled, topk_tail: ids bit-packed, or plain int16/int32

    def __post_init__(self) -> None:
        if self.logits not in FORMATS:
            raise CacheError(f"recipe.teacher.cache.logits: {self.logits!r}; use one of {', '.join(FORMATS)}.")
        if self.dtype not in DTYPES:
            raise CacheError(f"recipe.teacher.cache.dtype: {self.dtype!r}; use one of {sorted(DTYPES)}.")
        if self.k < 1:
            raise CacheError(f"recipe.teacher.cache.k: must be >= 1; got {self.k}.")
        if not 1 <= self.samples <= 255:
            raise CacheError(f"recipe.teacher.cache.samples: must be in 1..255; got {self.samples}.")
        if not self.proposal_temperature > 0:
            raise CacheError("recipe.teacher.cache.proposal_temperature: must be > 0; got "
                             f"{self.proposal_temperature}.")
        if self.values not in VALUE_CODES:
            raise CacheError(f"recipe.teacher.cache.values: {self.values!r}; use one of {', '.join(VALUE_CODES)}.")
        if self.indices not in INDEX_CODES:
            raise CacheError(f"recipe.teacher.cache.indices: {self.indices!r}; use one of {', '.join(INDEX_CODES)}.")

    def as_dict(self) -> dict[str, Any]:
        """The settings that matter for this format (`formats.FORMAT_SETTINGS`): what the manifest records and
        the settings fingerprint covers, so a setting the format does not read changes neither (full and topk
        keep the keys they had before the other formats existed, and older stores their fingerprint)."""
        out = asdict(self)
        out["features"] = sorted(out["features"])
        for key in FORMAT_KEYS:
            if key not in FORMAT_SETTINGS[self.logits]:
                out.pop(key)
        return out


def settings_fingerprint(settings: CacheSettings, inputs: TeacherInputs,
                         taps: Mapping[str, str] | None = None) -> str:
    """What the store holds and from which model inputs (and, for features, which module paths)."""
    paths = {name: (taps or {}).get(name) for name in settings.features}
    text = json.dumps({"settings": settings.as_dict(), "inputs": inputs, "taps": paths, "format": SETTINGS_VERSION,
                       "hash": HASH_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def split_hashes(data: TensorData, inputs: TeacherInputs, batch_size: int = 4096) -> tuple[Tensor, Tensor]:
    """(ids, content hashes) of every row of `data`, in row order (over `hashing.content_keys`)."""
    hashes = [row_hashes(data[slice(i, i + batch_size)], inputs) for i in range(0, len(data), batch_size)]
    return data.tensors["index"].long(), torch.cat(hashes)


Hashed = Mapping[str, tuple[Tensor, Tensor]]  # split -> (ids, content hashes), as `split_hashes` gives them


def hash_splits(splits: Mapping[str, TensorData], inputs: TeacherInputs) -> dict[str, tuple[Tensor, Tensor]]:
    return {name: split_hashes(d, inputs) for name, d in splits.items()}


def fingerprint_splits(splits: Mapping[str, TensorData], inputs: TeacherInputs, hashed: Hashed | None = None) -> str:
    """The data fingerprint: every split's (id, content hash) pairs, under the keys the hashes cover. A caller
    that also builds the store passes the pairs it hashed (`hash_splits`) here and to `write_cache`."""
    keys = content_keys(inputs, next(iter(splits.values())).tensors) if splits else content_keys(inputs, ())
    return data_fingerprint(dict(hashed) if hashed is not None else hash_splits(splits, inputs), keys)


# --------------------------------------------------------------------------------------------- writing


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(np.uint16) if dtype == torch.bfloat16 else torch.empty((), dtype=dtype).numpy().dtype


def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    return t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


class _Runner:
    """Teacher forward over batches -> {file stem: tensor} in the store's dtypes."""

    def __init__(self, teacher: nn.Module, inputs: TeacherInputs, taps: Mapping[str, str], settings: CacheSettings,
                 device: torch.device) -> None:
        self.teacher, self.inputs, self.settings, self.device = teacher, inputs, settings, device
        self.vocab_size = 0
        missing = [name for name in settings.features if name not in taps]
        if missing:
            raise CacheError(f"recipe.teacher.cache.features: {missing} are not teacher taps; declare them under "
                             f"taps.teacher as name: module.path (declared: {sorted(taps) or 'none'}).")
        self.capture = Capture(teacher, {name: taps[name] for name in settings.features}, owner="teacher")

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Tensor], keys: Tensor | None = None) -> dict[str, Tensor]:
        """The outputs to store for `batch`; `keys` its rows' content hashes when already known (a sampled
        store draws with them; else they are hashed here)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.capture:
            output = call_model(self.teacher, batch, self.inputs)
        if isinstance(output, TopK):  # a teacher that answers with its own top-k log-probs (kdforge.llm.served)
            k = output.values.shape[-1]
            if self.settings.logits != "topk" or self.settings.k != k or self.settings.features:
                raise CacheError(f"recipe.teacher.cache: this teacher gives its top-{k} log-probabilities only; "
                                 f"store them with logits: topk, k: {k} and no features.")
            self.vocab_size = output.vocab_size
            index = torch.int16 if output.vocab_size <= 2**15 else torch.int32
            return {"topk_values": output.values.to(DTYPES[self.settings.dtype]),
                    "topk_indices": output.indices.to(index), "logsumexp": output.logsumexp.float()}
        logits = logits_of(output)
        self.vocab_size = int(logits.shape[-1])
        dtype = DTYPES[self.settings.dtype]
        if self.settings.logits == "full":
            out = {"logits": logits.to(dtype)}
        elif self.settings.logits in SPARSE_FORMATS:
            if self.settings.logits == "sampled" and keys is None:
                keys = row_hashes(batch, self.inputs)
            out = encode(logits, self.settings, keys)
        else:
            topk = compress_topk(logits, self.settings.k, dtype)
            out = {"topk_values": topk.values, "topk_indices": topk.indices, "logsumexp": topk.logsumexp}
        for name in self.settings.features:
            out[f"feat.{name}"] = self.capture.features[name].to(dtype)
        return out

    def close(self) -> None:
        self.capture.remove()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _allocate(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Create an `.npy` array file with its blocks reserved: a full disk is then an OSError here, before the
    teacher runs, not when a write finds no block hours later."""
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system without fallocate: sparse file
            raise
    finally:
        os.close(fd)


def partial_dir(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.partial"


def tokens_per_row(data: TensorData, inputs: TeacherInputs) -> int:
    """Positions per row that the teacher computes outputs for: the (padded) length of the first input with a
    sequence dimension ((N, T) token ids, or (N, T, ...)), else 1 (one output per row)."""
    for key in (inputs.values() if isinstance(inputs, Mapping) else inputs):
        tensor = data.tensors.get(key)
        if tensor is not None and tensor.dim() >= 2 and not tensor.is_floating_point():
            return int(tensor.shape[1])
    return 1


def batch_rows(batch_size: int, per_row: int, max_batch_tokens: int | None) -> int:
    """Rows per teacher batch: `batch_size`, fewer when `max_batch_tokens` allows fewer (at least one row)."""
    if max_batch_tokens is None:
        return batch_size
    return max(1, min(batch_size, max_batch_tokens // max(per_row, 1)))


def _log_throughput(split: str, rows: int, per_row: int, batch: int, seconds: float, shard: str = "") -> None:
    if rows <= 0:
        return
    rate = rows / max(seconds, 1e-9)
    logger.info("cache: %s%s: %d rows in %.2f s (%.0f rows/s, %.0f tokens/s; %d rows x %d positions a batch)",
                split, shard, rows, seconds, rate, rate * per_row, batch, per_row)


class _Writer:
    """Writes teacher outputs into the store's array files on a background thread, so that the teacher's next
    forward overlaps the write of the last one (`os.pwrite`, SHA-256 and `fdatasync` release the GIL).
    The queue holds at most `depth` jobs, so the build's memory stays bounded at about `depth` + 1 batches of
    outputs. Jobs run in order: a chunk's progress record is written only after its rows. An error in the
    thread is raised in the caller at its next `put` or at `close`; after one, queued jobs are dropped."""

    def __init__(self, depth: int = 2) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kdforge-cache-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as exc:  # handed to the caller, which re-raises it
                    self._error = exc

    def put(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(job)

    def close(self, raise_error: bool = True) -> None:
        """Run every queued job (also when the caller is failing: the chunks it finished are then recorded),
        stop the thread, and raise its error if there was one and `raise_error`."""
        self._queue.put(None)
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


def shard_chunks(rows: int, chunk_rows: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """The chunks (start, stop) of a split of `rows` rows that process `rank` of `world` builds: a contiguous
    run of the split's chunks. Batches restart at every chunk, so any process layout runs the teacher on the
    very batches of a one-process build (and writes the same bytes)."""
    starts = list(range(0, rows, chunk_rows))
    mine = starts[len(starts) * rank // world:len(starts) * (rank + 1) // world]
    return [(start, min(start + chunk_rows, rows)) for start in mine]


def _done_chunks(work: Path, progress: dict, fingerprints: Mapping[str, str], chunk_rows: int) -> set[tuple[str, int]]:
    """(split, chunk start) of every chunk an earlier run recorded as written, by any process: each process's
    `progress.shard-<rank>.json` (kept only if built with these fingerprints and chunk size), and the row
    count a one-process build of an older kdforge recorded in progress.json."""
    done: set[tuple[str, int]] = set()
    for path in work.glob("progress.shard-*.json"):
        try:
            shard = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a shard file cut short: its chunks are built again
        if shard.get("fingerprints") == fingerprints and shard.get("chunk_rows") == chunk_rows:
            done.update((split, start) for split, starts in shard.get("done", {}).items() for start in starts)
    for split, record in progress["splits"].items():
        done.update((split, start) for start, stop in shard_chunks(record["rows"], chunk_rows)
                    if stop <= record.get("done", 0))
    return done


def _start_build(work: Path, progress_file: Path, splits: Mapping[str, TensorData], inputs: TeacherInputs,
                 runner: _Runner, fingerprints: Mapping[str, str], hashed: Hashed | None = None) -> dict:
    """A fresh `.partial` folder: ids and hashes written, every output array allocated at its full size (its
    shapes from a one-row probe), and progress.json saying what is where."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    progress: dict[str, Any] = {"fingerprints": dict(fingerprints), "splits": {}, "vocab_size": None}
    for name, data in splits.items():
        (work / name).mkdir()
        ids, hashes = hashed[name] if hashed is not None else split_hashes(data, inputs)
        np.save(work / name / "ids.npy", ids.numpy().astype("<i8"))
        np.save(work / name / "hashes.npy", hashes.numpy().astype("<i8"))
        probe = runner(data[slice(0, 1)])
        progress["vocab_size"] = runner.vocab_size
        for stem, value in probe.items():
            _allocate(work / name / f"{stem}.npy", _np_dtype(value.dtype), (len(data), *value.shape[1:]))
        progress["splits"][name] = {"rows": len(data), "arrays": {stem: str(v.dtype).removeprefix("torch.")
                                                                  for stem, v in probe.items()}}
    io.write_json(progress_file, progress)
    return progress


def write_cache(teacher: nn.Module, splits: Mapping[str, TensorData], directory: str | Path,
                settings: CacheSettings, fingerprints: Mapping[str, str], inputs: TeacherInputs,
                taps: Mapping[str, str] | None = None, batch_size: int = 512, chunk_rows: int = 4096,
                overwrite: bool = False, device: torch.device | str = "cpu", extra: Mapping[str, Any] | None = None,
                on_chunk: Callable[[str, int, int], None] | None = None, max_batch_tokens: int | None = None,
                rank: int = 0, world: int = 1, barrier: Callable[[], None] | None = None,
                hashed: Hashed | None = None) -> str:
    """Run `teacher` once over every split and store its outputs in `directory`.

    `fingerprints` holds "teacher" and "data" (see `hashing`); the settings fingerprint is added here.
    `hashed`: the splits' (ids, content hashes) when the caller already computed them for the data
    fingerprint (`hash_splits`); else they are computed here.
    A teacher batch holds at most `batch_size` rows and, when `max_batch_tokens` is set, at most that many
    tokens (rows x positions of a sequence input, `tokens_per_row`). A writer thread copies each batch's
    outputs into the store while the teacher computes the next, with at most two batches queued: the build's
    peak memory is about three batches of teacher outputs, so for a language model a row count alone says
    little. The throughput (rows and tokens per second) is logged; `on_chunk(split, rows done, rows)` is
    called from the writer thread after each recorded chunk.

    Several processes (`torchrun`, `accelerate launch`) build one store together when each calls this with
    its `rank`, the `world` size and a `barrier` (e.g. `PartialState().wait_for_everyone`): rank 0 allocates
    the arrays, each process computes and writes its own run of chunks in place and records them in its own
    progress file (an interrupted build resumes chunk by chunk, in any process layout), and rank 0 writes the
    one manifest at the end. Returns "up to date" (a complete matching store was there), "resumed" or "built".
    """
    directory = Path(directory)
    sync = barrier if barrier is not None and world > 1 else (lambda: None)
    fingerprints = {**fingerprints, "settings": settings_fingerprint(settings, inputs, taps)}
    if (directory / "manifest.json").is_file() and not overwrite:  # --overwrite rebuilds whatever is there
        existing = read_manifest(directory)
        if existing.get("fingerprints") == fingerprints:
            return "up to date"
        if not overwrite:
            differ = [k for k in ("teacher", "data", "settings") if existing.get("fingerprints", {}).get(k)
                      != fingerprints.get(k)]
            raise CacheError(
                f"teacher cache {str(directory)!r} was built for another {' and '.join(differ)}. Pass --overwrite "
                "(overwrite=True) to rebuild it, or choose another cache dir."
            )
    elif directory.exists() and any(directory.iterdir()) and not overwrite:
        raise CacheError(f"cache dir {str(directory)!r} exists and is not a kdforge teacher cache. Choose another "
                         "dir, or pass --overwrite to replace it.")
    work = partial_dir(directory)
    progress_file = work / "progress.json"
    runner = _Runner(teacher, inputs, taps or {}, settings, torch.device(device))
    was_training = teacher.training
    teacher.eval()
    try:
        status = "resumed"
        if rank == 0:  # one process decides between resuming and starting over, and allocates
            progress = None
            if progress_file.is_file():
                try:
                    progress = json.loads(progress_file.read_text())
                except json.JSONDecodeError:
                    progress = None
                if progress is None or progress.get("fingerprints") != fingerprints:
                    logger.info("cache: %s holds an interrupted build for other inputs; starting over", work)
                    progress = None
            if progress is None:
                status = "built"
                progress = _start_build(work, progress_file, splits, inputs, runner, fingerprints, hashed)
        sync()  # the arrays exist before any process writes into them
        progress = json.loads(progress_file.read_text())
        done = _done_chunks(work, progress, fingerprints, chunk_rows)
        if rank != 0 and not done:
            status = "built"
        checksums = _write_shard(runner, splits, work, progress, inputs, done, fingerprints, chunk_rows,
                                 batch_size, max_batch_tokens, rank, world, on_chunk)
    finally:
        runner.close()
        teacher.train(was_training)
    sync()  # every process has written its rows
    if rank == 0:
        done = _done_chunks(work, progress, fingerprints, chunk_rows)
        missing = [(name, start) for name, record in progress["splits"].items()
                   for start, _ in shard_chunks(record["rows"], chunk_rows) if (name, start) not in done]
        if missing:
            raise CacheError(f"cache build in {str(work)!r}: {len(missing)} chunk(s) were not written (first: "
                             f"{missing[0][0]} rows from {missing[0][1]}); run the build again to finish them.")
        _finish(work, directory, progress, settings, inputs, taps, extra or {}, overwrite, checksums)
    sync()  # the store is in place when any process returns
    return status


def _write_shard(runner: _Runner, splits: Mapping[str, TensorData], work: Path, progress: dict, inputs: TeacherInputs,
                 done: set[tuple[str, int]], fingerprints: Mapping[str, str], chunk_rows: int, batch_size: int,
                 max_batch_tokens: int | None, rank: int, world: int,
                 on_chunk: Callable[[str, int, int], None] | None) -> dict[str, str]:
    """This process's chunks of every split not yet done: teacher forward here, copies on the writer thread,
    and after each chunk (its rows made durable) its start added to `progress.shard-<rank>.json`. Returns the SHA-256
    of the array files it wrote whole and in order ({path in the store: hex digest}; see `ArrayFile`)."""
    checksums: dict[str, str] = {}
    shard_file = work / f"progress.shard-{rank}.json"
    mine: dict[str, list[int]] = {}
    if shard_file.is_file():
        mine = {split: [start for start in starts if (split, start) in done]
                for split, starts in json.loads(shard_file.read_text()).get("done", {}).items()}
    label = f" (process {rank} of {world})" if world > 1 else ""
    writer = _Writer()
    files: dict[str, ArrayFile] = {}
    try:
        for name, data in splits.items():
            record = progress["splits"][name]
            per_row = tokens_per_row(data, inputs)
            rows = batch_rows(batch_size, per_row, max_batch_tokens)
            started, written = time.perf_counter(), 0
            chunks = shard_chunks(len(data), chunk_rows, rank, world)
            # one process writing a split whole and in order hashes the bytes as it writes them
            whole = world == 1 and not any((name, start) in done for start, _ in chunks)
            files = {stem: ArrayFile(work / name / f"{stem}.npy", hash_in_order=whole) for stem in record["arrays"]}
            # a sampled store draws with the rows' content hashes, written once by `_start_build`
            keys = np.load(work / name / "hashes.npy", mmap_mode="r") if runner.settings.logits == "sampled" else None
            for start, stop in chunks:
                if (name, start) in done:
                    continue
                for lo in range(start, stop, rows):
                    hi = min(lo + rows, stop)
                    row_keys = None if keys is None else torch.from_numpy(np.array(keys[lo:hi]))
                    writer.put(functools.partial(_store_rows, files, lo, hi, runner(data[slice(lo, hi)], row_keys)))
                writer.put(functools.partial(_record_chunk, files, shard_file, mine, name, start, stop, len(data),
                                             {"fingerprints": dict(fingerprints), "chunk_rows": chunk_rows},
                                             on_chunk))
                written += stop - start
            writer.close()  # this split's rows are written before its time is taken
            writer = _Writer()
            checksums.update({f"{name}/{stem}.npy": digest for stem, file in files.items()
                              if (digest := file.digest()) is not None})
            _close_all(files)
            del keys
            _log_throughput(name, written, per_row, rows, time.perf_counter() - started, label)
    except BaseException:
        writer.close(raise_error=False)  # the chunks finished before the failure are recorded
        raise
    finally:
        _close_all(files)
    writer.close()
    return checksums


def _store_rows(files: Mapping[str, ArrayFile], lo: int, hi: int, outputs: Mapping[str, Tensor]) -> None:
    for stem, value in outputs.items():
        rows = _to_numpy(value)
        if len(rows) != hi - lo or rows.shape[1:] != files[stem].shape[1:]:
            raise CacheError(f"the teacher's {stem} for rows {lo}-{hi} have shape {tuple(rows.shape)}, but the "
                             f"store allocated {files[stem].shape} from its first row: the teacher's output "
                             "shape must not depend on the batch (pad every row of a split to one length).")
        files[stem].write(lo, rows)


def _close_all(files: Mapping[str, ArrayFile]) -> None:
    for file in files.values():
        file.close()


def _write_json_any_rank(path: Path, data: dict) -> None:
    """temp + rename, from whichever process calls it: `io.write_json` discards what non-main processes write
    (they must not touch a run folder), but each builder of a shared cache records its own chunks."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _record_chunk(files: Mapping[str, ArrayFile], shard_file: Path, mine: dict[str, list[int]], split: str,
                  start: int, stop: int, rows: int, header: dict,
                  on_chunk: Callable[[str, int, int], None] | None) -> None:
    """After a chunk's rows: make them durable, then record the chunk as this process's (temp + rename)."""
    for file in files.values():
        file.sync()
    mine.setdefault(split, []).append(start)
    _write_json_any_rank(shard_file, {**header, "done": mine})
    if on_chunk is not None:
        on_chunk(split, stop, rows)


def _finish(work: Path, directory: Path, progress: dict, settings: CacheSettings, inputs: TeacherInputs,
            taps: Mapping[str, str] | None, extra: Mapping[str, Any], overwrite: bool,
            checksums: Mapping[str, str] | None = None) -> None:
    """The manifest (`checksums`: SHA-256 already computed while writing, by file; the others are read here),
    then the `.partial` folder renamed to the store."""
    files = {}
    for name, record in progress["splits"].items():
        for stem in ["ids", "hashes", *record["arrays"]]:
            path = work / name / f"{stem}.npy"
            array = np.load(path, mmap_mode="r")
            dtype = record["arrays"].get(stem, "int64")
            files[f"{name}/{stem}.npy"] = {"shape": list(array.shape), "dtype": dtype,
                                           "bytes": path.stat().st_size,
                                           "sha256": (checksums or {}).get(f"{name}/{stem}.npy")
                                           or io.sha256_file(path)}
            del array
    manifest = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "hash": HASH_VERSION,
        "fingerprints": progress["fingerprints"], "settings": settings.as_dict(), "inputs": inputs,
        "vocab_size": progress["vocab_size"], "taps": {name: (taps or {}).get(name) for name in settings.features},
        "splits": {name: record["rows"] for name, record in progress["splits"].items()},
        "files": files, **dict(extra),
    }
    io.write_json(work / "manifest.json", manifest)
    _backdate(work, files)
    (work / "progress.json").unlink()
    for shard in work.glob("progress.shard-*.json"):  # each process's record of its chunks (write_cache)
        shard.unlink()
    _fsync_dir(work)
    if directory.exists():
        if not overwrite and (directory / "manifest.json").is_file():
            raise CacheError(f"cache dir {str(directory)!r} appeared while building; pass --overwrite.")
        old = directory.parent / f".{directory.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
        work.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        directory.parent.mkdir(parents=True, exist_ok=True)
        work.rename(directory)
    _fsync_dir(directory.parent)
    # every checksum was computed here, from the bytes written or the files: opening the store needs no re-read
    _VERIFIED.add(_verified_key(directory, read_manifest(directory)))


def _backdate(work: Path, files: Mapping[str, Any]) -> None:
    """Set each array file's modification time a second back: the build vouches for its checksums by size, time
    and inode (`_verified_key`), and a write after the build, even one within the file system's timestamp tick,
    then gives the file another time."""
    for rel in files:
        stat = (work / rel).stat()
        os.utime(work / rel, ns=(stat.st_atime_ns, stat.st_mtime_ns - 1_000_000_000))


def repair_cache(teacher: nn.Module, splits: Mapping[str, TensorData], directory: str | Path,
                 settings: CacheSettings, fingerprints: Mapping[str, str], inputs: TeacherInputs,
                 taps: Mapping[str, str] | None = None, batch_size: int = 512, chunk_rows: int = 4096,
                 device: torch.device | str = "cpu") -> dict[str, str]:
    """Rebuild only the splits of `directory` whose files are missing, truncated or corrupted.

    The store must have been built for this teacher, data and settings (`fingerprints` as for `write_cache`);
    the damaged splits are written to a sibling folder, moved in one by one, and the manifest is rewritten last,
    so an interrupted repair leaves the store as damaged as it was, never worse. Returns {file: what was wrong}
    (empty: nothing to repair).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    fingerprints = {**fingerprints, "settings": settings_fingerprint(settings, inputs, taps)}
    if manifest.get("fingerprints") != fingerprints:
        raise CacheError(f"teacher cache {str(directory)!r} was built for another teacher, data or settings, so "
                         "its damaged files cannot be rebuilt alone. Rebuild it with `kdforge cache RECIPE "
                         "--overwrite`.")
    bad = damaged_files(directory, manifest)
    names = sorted({rel.split("/", 1)[0] for rel in bad})
    if not names:
        return {}
    missing = [name for name in names if name not in splits]
    if missing:
        raise CacheError(f"teacher cache {str(directory)!r}: split(s) {missing} are damaged but not in the data "
                         "given. Rebuild it with `kdforge cache RECIPE --overwrite`.")
    fresh = directory.parent / f".{directory.name}.repair"
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        write_cache(teacher, {name: splits[name] for name in names}, fresh, settings,
                    {k: v for k, v in fingerprints.items() if k != "settings"}, inputs, taps, batch_size=batch_size,
                    chunk_rows=chunk_rows, overwrite=True, device=device)
        rebuilt = read_manifest(fresh)
        for name in names:
            old = directory / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if (directory / name).exists():
                (directory / name).rename(old)
            (fresh / name).rename(directory / name)
            shutil.rmtree(old, ignore_errors=True)
        files = {rel: meta for rel, meta in manifest["files"].items() if rel.split("/", 1)[0] not in names}
        files.update(rebuilt["files"])
        io.write_json(directory / "manifest.json", {**manifest, "files": files})
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(partial_dir(fresh), ignore_errors=True)
    _fsync_dir(directory)
    return bad


# --------------------------------------------------------------------------------------------- reading


def read_manifest(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        hint = (" An interrupted build is in " + str(partial_dir(directory)) + "; run `kdforge cache` again to "
                "finish it.") if partial_dir(directory).is_dir() else ""
        raise CacheError(f"teacher cache {str(directory)!r} does not exist or is incomplete (no manifest.json).{hint}"
                         " Build it with `kdforge cache RECIPE`.")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CacheError(f"teacher cache {str(directory)!r}: manifest.json is corrupted. Rebuild the cache with "
                         "`kdforge cache RECIPE --overwrite`.") from None
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") not in READ_VERSIONS:
        raise CacheError(f"{str(path)!r} is format {manifest.get('format')!r} v{manifest.get('version')}; this "
                         f"kdforge reads {CACHE_FORMAT!r} v{CACHE_VERSION}. Rebuild it with "
                         "`kdforge cache RECIPE --overwrite`.")
    return manifest


_VERIFIED: set[tuple] = set()  # `_verified_key`s whose checksums were verified in this process


REPAIR_HINT = ("Repair it with `kdforge cache RECIPE` (rebuilds the damaged split only), or rebuild all of it with "
               "`kdforge cache RECIPE --overwrite`.")


def damaged_files(directory: Path, manifest: dict[str, Any], checksums: bool = True) -> dict[str, str]:
    """{file relative to the store: what is wrong} for every missing, truncated or (if `checksums`) corrupted one."""
    bad: dict[str, str] = {}
    for rel, meta in manifest["files"].items():
        path = directory / rel
        if not path.is_file():
            bad[rel] = "is missing"
        elif path.stat().st_size != meta["bytes"]:
            bad[rel] = f"is truncated or corrupted ({path.stat().st_size} bytes, expected {meta['bytes']})"
    if checksums:
        for rel, meta in manifest["files"].items():
            if rel not in bad and io.sha256_file(directory / rel) != meta["sha256"]:
                bad[rel] = "is corrupted (checksum mismatch)"
    return bad


def _verified_key(directory: Path, manifest: dict[str, Any]) -> tuple:
    """What a checksum verification in this process vouches for: the store's folder, its manifest and each
    file's size and modification time (a file written since is checked again)."""
    stats = []
    for rel in sorted(manifest["files"]):
        try:
            stat = (directory / rel).stat()
        except OSError:
            return ()  # a missing file is never vouched for
        stats.append((rel, stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return (str(directory.resolve()), hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
            tuple(stats))


def verify_files(directory: Path, manifest: dict[str, Any], checksums: bool = True) -> None:
    """Every file exists with its recorded size and (if `checksums`) its SHA-256; names the first bad one.
    Checksums verified once in this process (or computed by the build that wrote the store) are not read
    again while the files are unchanged."""
    key = _verified_key(directory, manifest)
    bad = damaged_files(directory, manifest, checksums=checksums and key not in _VERIFIED)
    if bad:
        rel, what = next(iter(bad.items()))
        raise CacheError(f"teacher cache {str(directory)!r}: {rel} {what}. {REPAIR_HINT}")
    if checksums and key:
        _VERIFIED.add(key)


def _open_array(path: Path, dtype: str) -> Tensor:
    # copy-on-write mapping: writable for torch.from_numpy (no warning), never written back to the file.
    # allow_pickle=False: an object array (a pickle inside a .npy) is refused, never unpickled
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except ValueError as exc:
        raise CacheError(f"teacher cache file {str(path)!r} is not a plain numeric array ({exc}); kdforge does not "
                         f"load Python objects from a cache. {REPAIR_HINT}") from None
    tensor = torch.from_numpy(array)
    return tensor.view(torch.bfloat16) if dtype == "bfloat16" else tensor


def _check_finite(directory: Path, split: str, tensors: Mapping[str, Tensor], chunk: int = 1 << 16) -> None:
    """A store opened with `verify: false` is read without checksums; NaN in it (flipped bytes, or a teacher that
    gave NaN) would surface only as a non-finite loss far from its cause, so name the file here instead."""
    for stem, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        for lo in range(0, len(tensor), chunk):
            if bool(torch.isnan(tensor[lo:lo + chunk]).any()):
                raise CacheError(f"teacher cache {str(directory)!r}: {split}/{stem}.npy holds NaN values (it was "
                                 "opened with cache.verify: false, so its checksums were not checked); a loss on "
                                 f"it would be non-finite. {REPAIR_HINT}")


@dataclass
class SplitArrays:
    ids: Tensor
    hashes: Tensor
    arrays: dict[str, Tensor]


class CacheStore:
    """An opened, verified store: memory-mapped tensors per split, and its manifest."""

    def __init__(self, directory: str | Path, verify: bool = True) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        verify_files(self.directory, self.manifest, checksums=verify)
        self.verified = verify
        self._finite: set[str] = set()
        self.settings = CacheSettings(**{**self.manifest["settings"],
                                         "features": tuple(self.manifest["settings"]["features"])})
        self.vocab_size = self.manifest.get("vocab_size")

    @property
    def fingerprints(self) -> dict[str, str]:
        return self.manifest["fingerprints"]

    def split(self, name: str) -> SplitArrays:
        if name not in self.manifest["splits"]:
            raise CacheError(f"teacher cache {str(self.directory)!r} holds splits {sorted(self.manifest['splits'])}, "
                             f"not {name!r}. Rebuild it with `kdforge cache RECIPE --overwrite`.")
        files = {rel.split("/", 1)[1].removesuffix(".npy"): meta for rel, meta in self.manifest["files"].items()
                 if rel.startswith(f"{name}/")}
        tensors = {stem: _open_array(self.directory / name / f"{stem}.npy", meta["dtype"])
                   for stem, meta in files.items()}
        if not self.verified and name not in self._finite:
            _check_finite(self.directory, name, tensors)
            self._finite.add(name)
        return SplitArrays(tensors.pop("ids"), tensors.pop("hashes"), tensors)

    def nbytes(self) -> int:
        return sum(meta["bytes"] for meta in self.manifest["files"].values())

    def check(self, expected: Mapping[str, str | None], where: str = "recipe.teacher.cache",
              what: Mapping[str, str] | None = None) -> None:
        """Compare fingerprints ("teacher", "data", "settings"); None skips one. Names what differs: `what` gives a
        caller's more precise account of a fingerprint (a served teacher's, cross-tokenizer rows'). Other data
        is a matter of `recipe.data`, the others of `where`."""
        accounts = {"teacher": "another teacher (its weights differ)", "data": "other data (sample contents or ids "
                    "differ)", "settings": "other cache settings or model inputs", **(what or {})}
        for key, value in expected.items():
            if value is not None and self.fingerprints.get(key) != value:
                raise CacheError(
                    f"{'recipe.data' if key == 'data' else where}: the teacher cache in {str(self.directory)!r} was "
                    f"built for {accounts[key]}. Rebuild it with `kdforge cache RECIPE --overwrite`, or point "
                    "cache.dir at a cache built for this recipe."
                )
