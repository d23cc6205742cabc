"""The teacher-output store: a folder of memory-mapped `.npy` arrays, one set per split, plus a manifest.

Layout (format `kdforge-teacher-cache` v1)::

    DIR/manifest.json                 format, version, fingerprints, settings, every file's shape/dtype/sha256
    DIR/<split>/ids.npy               (N,) int64 sample ids, in the order rows were written
    DIR/<split>/hashes.npy            (N,) int64 content hash of each sample's inputs (kdforge.cache.hashing)
    DIR/<split>/logits.npy            (N, ..., K) full logits                               [logits: full]
    DIR/<split>/topk_values.npy       (N, ..., k) largest logits, float16 (bfloat16 as raw uint16 bits)
    DIR/<split>/topk_indices.npy      (N, ..., k) their indices, int16 (V <= 32768) or int32  [logits: topk]
    DIR/<split>/logsumexp.npy         (N, ...) float32 log-sum-exp of the full logits         [logits: topk]
    DIR/<split>/feat.<tap>.npy        (N, ...) captured intermediate features             [features: ...]

Why `.npy` + `numpy` memmap: a plain header plus raw bytes, memory-mapped with `np.load(mmap_mode=...)` and
wrapped by `torch.from_numpy` without a copy, so a shuffled batch is one torch gather over pages the OS
caches. Arrays can be preallocated and filled chunk by chunk, which is what makes an interrupted build
resumable. safetensors (already a dependency) is read-only memory-mapped in the same way but needs every
tensor's size in one header written last, so it cannot be filled in place; Arrow would add pyarrow as a new
dependency for nothing we need here (no nested types, no columnar queries).

Writes go to `.<DIR name>.partial/` next to DIR. Each finished chunk of rows is flushed, then recorded in
`progress.json`; a later run with the same fingerprint continues from the last recorded chunk (another
fingerprint starts over). When every split is written, the manifest (with SHA-256 of every file) is written
and the folder is renamed to DIR. Readers check the format, the sizes and, unless told not to, the checksums.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdforge import io
from kdforge.cache.hashing import HASH_VERSION, data_fingerprint, row_hashes
from kdforge.cache.topk import compress_topk
from kdforge.capture import Capture
from kdforge.data.tensors import TensorData
from kdforge.errors import KDForgeError
from kdforge.models.forward import call_model, logits_of

logger = logging.getLogger("kdforge")

CACHE_FORMAT = "kdforge-teacher-cache"
CACHE_VERSION = 1
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CacheError(KDForgeError, ValueError):
    """A teacher cache is missing, incomplete, corrupted, or was built for another teacher, data or settings."""


@dataclass(frozen=True)
class CacheSettings:
    """What the store holds. `k` and the value dtype matter only for their mode; features are tap names."""

    logits: str = "full"  # "full" | "topk"
    k: int = 64
    dtype: str = "float32"
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.logits not in ("full", "topk"):
            raise CacheError(f"recipe.teacher.cache.logits: {self.logits!r}; use 'full' or 'topk'.")
        if self.dtype not in DTYPES:
            raise CacheError(f"recipe.teacher.cache.dtype: {self.dtype!r}; use one of {sorted(DTYPES)}.")
        if self.k < 1:
            raise CacheError(f"recipe.teacher.cache.k: must be >= 1; got {self.k}.")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = sorted(out["features"])
        if self.logits == "full":
            out.pop("k")
        return out


def settings_fingerprint(settings: CacheSettings, inputs: list[str], taps: Mapping[str, str] | None = None) -> str:
    """What the store holds and from which model inputs (and, for features, which module paths)."""
    paths = {name: (taps or {}).get(name) for name in settings.features}
    text = json.dumps({"settings": settings.as_dict(), "inputs": inputs, "taps": paths, "format": CACHE_VERSION,
                       "hash": HASH_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def split_hashes(data: TensorData, inputs: list[str], batch_size: int = 4096) -> tuple[Tensor, Tensor]:
    """(ids, content hashes) of every row of `data`, in row order."""
    hashes = [row_hashes(data[slice(i, i + batch_size)], inputs) for i in range(0, len(data), batch_size)]
    return data.tensors["index"].long(), torch.cat(hashes)


def fingerprint_splits(splits: Mapping[str, TensorData], inputs: list[str]) -> str:
    return data_fingerprint({name: split_hashes(d, inputs) for name, d in splits.items()}, inputs)


# --------------------------------------------------------------------------------------------- writing


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(np.uint16) if dtype == torch.bfloat16 else torch.empty((), dtype=dtype).numpy().dtype


def _to_numpy(t: Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    return t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


class _Runner:
    """Teacher forward over batches -> {file stem: tensor} in the store's dtypes."""

    def __init__(self, teacher: nn.Module, inputs: list[str], taps: Mapping[str, str], settings: CacheSettings,
                 device: torch.device) -> None:
        self.teacher, self.inputs, self.settings, self.device = teacher, inputs, settings, device
        self.vocab_size = 0
        missing = [name for name in settings.features if name not in taps]
        if missing:
            raise CacheError(f"recipe.teacher.cache.features: {missing} are not teacher taps; declare them under "
                             f"taps.teacher as name: module.path (declared: {sorted(taps) or 'none'}).")
        self.capture = Capture(teacher, {name: taps[name] for name in settings.features}, owner="teacher")

    @torch.no_grad()
    def __call__(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with self.capture:
            logits = logits_of(call_model(self.teacher, batch, self.inputs))
        self.vocab_size = int(logits.shape[-1])
        dtype = DTYPES[self.settings.dtype]
        if self.settings.logits == "full":
            out = {"logits": logits.to(dtype)}
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
    """Create an `.npy` array file with its blocks reserved: a full disk is then an OSError here, not a SIGBUS
    when a memory-mapped write later finds no block to land in."""
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


def tokens_per_row(data: TensorData, inputs: list[str]) -> int:
    """Positions per row that the teacher computes outputs for: the (padded) length of the first input with a
    sequence dimension ((N, T) token ids, or (N, T, ...)), else 1 (one output per row)."""
    for key in inputs:
        tensor = data.tensors.get(key)
        if tensor is not None and tensor.dim() >= 2 and not tensor.is_floating_point():
            return int(tensor.shape[1])
    return 1


def batch_rows(batch_size: int, per_row: int, max_batch_tokens: int | None) -> int:
    """Rows per teacher batch: `batch_size`, fewer when `max_batch_tokens` allows fewer (at least one row)."""
    if max_batch_tokens is None:
        return batch_size
    return max(1, min(batch_size, max_batch_tokens // max(per_row, 1)))


def _log_throughput(split: str, rows: int, per_row: int, batch: int, seconds: float) -> None:
    if rows <= 0:
        return
    rate = rows / max(seconds, 1e-9)
    logger.info("cache: %s: %d rows in %.2f s (%.0f rows/s, %.0f tokens/s; %d rows x %d positions a batch)",
                split, rows, seconds, rate, rate * per_row, batch, per_row)


def write_cache(teacher: nn.Module, splits: Mapping[str, TensorData], directory: str | Path,
                settings: CacheSettings, fingerprints: Mapping[str, str], inputs: list[str],
                taps: Mapping[str, str] | None = None, batch_size: int = 512, chunk_rows: int = 4096,
                overwrite: bool = False, device: torch.device | str = "cpu", extra: Mapping[str, Any] | None = None,
                on_chunk: Callable[[str, int, int], None] | None = None, max_batch_tokens: int | None = None) -> str:
    """Run `teacher` once over every split and store its outputs in `directory`.

    `fingerprints` holds "teacher" and "data" (see `hashing`); the settings fingerprint is added here.
    A teacher batch holds at most `batch_size` rows and, when `max_batch_tokens` is set, at most that many
    tokens (rows x positions of a sequence input, `tokens_per_row`): the build's peak memory is about two
    batches of teacher outputs, so for a language model a row count alone says little. The throughput (rows
    and tokens per second) is logged. Returns "up to date" (a complete matching store was there), "resumed"
    or "built".
    """
    directory = Path(directory)
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
    progress = None
    if progress_file.is_file():
        try:
            progress = json.loads(progress_file.read_text())
        except json.JSONDecodeError:
            progress = None
        if progress is None or progress.get("fingerprints") != fingerprints:
            logger.info("cache: %s holds an interrupted build for other inputs; starting over", work)
            progress = None
    status = "resumed" if progress is not None else "built"
    runner = _Runner(teacher, inputs, taps or {}, settings, torch.device(device))
    was_training = teacher.training
    teacher.eval()
    try:
        if progress is None:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            progress = {"fingerprints": fingerprints, "splits": {}, "vocab_size": None}
            for name, data in splits.items():
                (work / name).mkdir()
                ids, hashes = split_hashes(data, inputs)
                np.save(work / name / "ids.npy", ids.numpy().astype("<i8"))
                np.save(work / name / "hashes.npy", hashes.numpy().astype("<i8"))
                probe = runner(data[slice(0, 1)])
                progress["vocab_size"] = runner.vocab_size
                for stem, value in probe.items():
                    _allocate(work / name / f"{stem}.npy", _np_dtype(value.dtype), (len(data), *value.shape[1:]))
                progress["splits"][name] = {"rows": len(data), "done": 0,
                                            "arrays": {stem: str(v.dtype).removeprefix("torch.")
                                                       for stem, v in probe.items()}}
            io.write_json(progress_file, progress)
        for name, data in splits.items():
            record = progress["splits"][name]
            arrays = {stem: np.lib.format.open_memmap(work / name / f"{stem}.npy", mode="r+")
                      for stem in record["arrays"]}
            per_row = tokens_per_row(data, inputs)
            rows = batch_rows(batch_size, per_row, max_batch_tokens)
            started, first = time.perf_counter(), record["done"]
            for start in range(record["done"], len(data), chunk_rows):
                stop = min(start + chunk_rows, len(data))
                for lo in range(start, stop, rows):
                    hi = min(lo + rows, stop)
                    for stem, value in runner(data[slice(lo, hi)]).items():
                        arrays[stem][lo:hi] = _to_numpy(value)
                for array in arrays.values():
                    array.flush()
                record["done"] = stop
                io.write_json(progress_file, progress)
                if on_chunk is not None:
                    on_chunk(name, stop, len(data))
            del arrays
            _log_throughput(name, len(data) - first, per_row, rows, time.perf_counter() - started)
    finally:
        runner.close()
        teacher.train(was_training)
    _finish(work, directory, progress, settings, inputs, taps, extra or {}, overwrite)
    return status


def _finish(work: Path, directory: Path, progress: dict, settings: CacheSettings, inputs: list[str],
            taps: Mapping[str, str] | None, extra: Mapping[str, Any], overwrite: bool) -> None:
    files = {}
    for name, record in progress["splits"].items():
        for stem in ["ids", "hashes", *record["arrays"]]:
            path = work / name / f"{stem}.npy"
            array = np.load(path, mmap_mode="r")
            dtype = record["arrays"].get(stem, "int64")
            files[f"{name}/{stem}.npy"] = {"shape": list(array.shape), "dtype": dtype,
                                           "bytes": path.stat().st_size, "sha256": io.sha256_file(path)}
            del array
    manifest = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "hash": HASH_VERSION,
        "fingerprints": progress["fingerprints"], "settings": settings.as_dict(), "inputs": inputs,
        "vocab_size": progress["vocab_size"], "taps": {name: (taps or {}).get(name) for name in settings.features},
        "splits": {name: record["rows"] for name, record in progress["splits"].items()},
        "files": files, **dict(extra),
    }
    io.write_json(work / "manifest.json", manifest)
    (work / "progress.json").unlink()
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


def repair_cache(teacher: nn.Module, splits: Mapping[str, TensorData], directory: str | Path,
                 settings: CacheSettings, fingerprints: Mapping[str, str], inputs: list[str],
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
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        raise CacheError(f"{str(path)!r} is format {manifest.get('format')!r} v{manifest.get('version')}; this "
                         f"kdforge reads {CACHE_FORMAT!r} v{CACHE_VERSION}. Rebuild it with "
                         "`kdforge cache RECIPE --overwrite`.")
    return manifest


_VERIFIED: dict[tuple[str, str], bool] = {}  # (dir, manifest sha) -> checksums already verified in this process


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


def verify_files(directory: Path, manifest: dict[str, Any], checksums: bool = True) -> None:
    """Every file exists with its recorded size and (if `checksums`) its SHA-256; names the first bad one."""
    key = (str(directory.resolve()), hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest())
    bad = damaged_files(directory, manifest, checksums=checksums and not _VERIFIED.get(key))
    if bad:
        rel, what = next(iter(bad.items()))
        raise CacheError(f"teacher cache {str(directory)!r}: {rel} {what}. {REPAIR_HINT}")
    if checksums:
        _VERIFIED[key] = True


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

    def check(self, expected: Mapping[str, str | None], where: str = "recipe.teacher.cache") -> None:
        """Compare fingerprints ("teacher", "data", "settings"); None skips one. Names what differs."""
        what = {"teacher": "another teacher (its weights differ)", "data": "other data (sample contents or ids "
                "differ)", "settings": "other cache settings or model inputs"}
        for key, value in expected.items():
            if value is not None and self.fingerprints.get(key) != value:
                raise CacheError(
                    f"{where}: the cache in {str(self.directory)!r} was built for {what[key]}. Rebuild it with "
                    "`kdforge cache RECIPE --overwrite`, or point cache.dir at a cache built for this recipe."
                )
