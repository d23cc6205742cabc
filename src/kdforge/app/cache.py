"""A recipe's teacher cache: build it (`kdforge cache`, or the first `kdforge distill` that needs it), and
open it for training (`CachedTeacher`) or, when the recipe gives only the cache, for evaluation
(`ReplayTeacher`). Every check here names the recipe field to change; the store itself is `kdforge.cache`.
"""

from __future__ import annotations

import logging
import shutil
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from kdforge.cache.hashing import teacher_fingerprint
from kdforge.cache.store import (
    CacheError,
    CacheSettings,
    CacheStore,
    damaged_files,
    fingerprint_splits,
    partial_dir,
    read_manifest,
    repair_cache,
    write_cache,
)
from kdforge.cache.teacher import CachedTeacher, ReplayTeacher
from kdforge.data import DataBundle
from kdforge.errors import RecipeError
from kdforge.io import DISK_ERRNOS, os_error
from kdforge.models import count_params
from kdforge.processes import process_state
from kdforge.recipe import CacheSpec, Recipe
from kdforge.types import TensorData
from kdforge.version import __version__

logger = logging.getLogger("kdforge")

_TEACHER_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


@dataclass
class CacheInfo:
    """What `cache_recipe` did: where the store is, and whether it was built, resumed or already there."""

    directory: Path
    status: str
    rows: dict[str, int]
    bytes: int
    fingerprints: dict[str, str]


def fingerprint_teacher(teacher: nn.Module) -> str:
    """`teacher_fingerprint`, computed once per teacher object (a frozen teacher does not change)."""
    if teacher not in _TEACHER_FINGERPRINTS:
        _TEACHER_FINGERPRINTS[teacher] = teacher_fingerprint(teacher)
    return _TEACHER_FINGERPRINTS[teacher]


def cache_spec(recipe: Recipe, directory: str | Path | None = None) -> tuple[CacheSpec, Path]:
    """The recipe's cache settings and resolved folder (`directory` overrides cache.dir)."""
    spec = recipe.teacher.cache
    if spec is None:
        if directory is None:
            raise RecipeError("recipe.teacher.cache: the recipe names no cache. Add `cache: DIR` under teacher, "
                              "or pass --dir DIR.")
        spec = CacheSpec(dir=str(directory))
    path = Path(directory) if directory is not None else recipe.resolve_path(spec.dir)
    return spec, path


def build_settings(spec: CacheSpec, recipe: Recipe) -> CacheSettings:
    """Settings for a new store: unset values take their defaults."""
    logits = spec.logits or "full"
    dtype = spec.dtype or ("float32" if logits == "full" else "float16")
    features = tuple(spec.features) if spec.features is not None else tuple(recipe.taps.teacher)
    return CacheSettings(logits=logits, k=spec.k or 64, dtype=dtype, features=features)


def cache_splits(data: DataBundle) -> dict[str, TensorData]:
    """Every split the teacher's outputs are stored for: train (the transfer set), val and test (evaluation)."""
    splits = {"train": data.teacher_train, "test": data.test}
    if data.val is not None:
        splits["val"] = data.val
    return splits


def _check_settings(store: CacheStore, spec: CacheSpec, recipe: Recipe) -> None:
    """Settings the recipe states must match the store; unset ones accept whatever it holds."""
    have = store.settings
    _check_stated(have, spec, store.directory, "Remove the setting to use it as it is, or rebuild")
    if spec.k is not None and have.logits == "topk" and spec.k != have.k:
        raise CacheError(f"recipe.teacher.cache.k: the cache in {str(store.directory)!r} keeps k={have.k}, not "
                         f"{spec.k}. Remove k to use it, or rebuild it with `kdforge cache RECIPE --overwrite`.")
    paths = store.manifest.get("taps", {})
    for name, path in recipe.taps.teacher.items():
        if name in paths and paths[name] != path:
            raise CacheError(f"recipe.taps.teacher.{name}: the cache stored {name} from {paths[name]!r}, not "
                             f"{path!r}. Rebuild it with `kdforge cache RECIPE --overwrite`.")
    if have.logits == "topk" and spec.tail == "uniform" and not any(
            f.endswith("/logsumexp.npy") for f in store.manifest["files"]):
        raise CacheError("recipe.teacher.cache.tail: this top-k cache has no log-sum-exp; use tail: renormalize.")


def open_store(recipe: Recipe, data: DataBundle | None, teacher: nn.Module | None,
               directory: str | Path | None = None) -> CacheStore:
    """Open and verify the recipe's store against the teacher (when there is one), data and settings."""
    spec, path = cache_spec(recipe, directory)
    store = CacheStore(path, verify=spec.verify)
    expected: dict[str, str | None] = {"teacher": None, "data": None}
    if teacher is not None and not isinstance(teacher, ReplayTeacher):
        expected["teacher"] = fingerprint_teacher(teacher)
    if data is not None:
        expected["data"] = fingerprint_splits(cache_splits(data), recipe.teacher.inputs)
    store.check(expected)
    _check_settings(store, spec, recipe)
    return store


def ensure_cache(recipe: Recipe, data: DataBundle, teacher: nn.Module, directory: str | Path | None = None,
                 overwrite: bool = False, repair: bool = False) -> CacheInfo:
    """Use the recipe's store if it matches; build (or finish building) it when it is missing; rebuild it all
    with `overwrite`; with `repair` (`kdforge cache`), rebuild only the splits whose files are damaged.

    Only the main process writes; with several processes the others wait and then read the same store.
    """
    spec, path = cache_spec(recipe, directory)
    state = process_state()  # under torchrun on CPU too: one builder, the others wait
    status = "up to date"
    if state.is_main_process:
        try:
            status = _build(recipe, spec, path, data, teacher, overwrite, repair)
        except OSError as exc:  # a full or failing disk: the half-built store is of no use, and takes space
            shutil.rmtree(partial_dir(path), ignore_errors=True)
            shutil.rmtree(path.parent / f".{path.name}.repair", ignore_errors=True)
            if exc.errno not in DISK_ERRNOS:
                raise
            raise os_error(exc, exc.filename or path) from None
    state.wait_for_everyone()
    store = open_store(recipe, data, teacher, path)
    return CacheInfo(path, status, dict(store.manifest["splits"]), store.nbytes(), dict(store.fingerprints))


def _build(recipe: Recipe, spec: CacheSpec, path: Path, data: DataBundle, teacher: nn.Module,
           overwrite: bool, repair: bool = False) -> str:
    settings = build_settings(spec, recipe)
    device = next(teacher.parameters()).device if any(True for _ in teacher.parameters()) else "cpu"
    if (path / "manifest.json").is_file() and not overwrite:
        if repair:
            status = _repair(recipe, spec, path, data, teacher, device)
            if status is not None:
                return status
        open_store(recipe, data, teacher, path)  # a usable store, or an error saying what differs
        return "up to date"
    fingerprints = {"teacher": fingerprint_teacher(teacher),
                    "data": fingerprint_splits(cache_splits(data), recipe.teacher.inputs)}
    teacher_spec = recipe.teacher
    extra: dict[str, Any] = {
        "teacher": {"params": count_params(teacher), "model": teacher_spec.model or teacher_spec.path},
        "recipe": recipe.name, "kdforge": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    started = time.perf_counter()
    logger.info("cache: running the teacher once over %s into %s (%s logits, %s)",
                ", ".join(f"{k}={len(v)}" for k, v in cache_splits(data).items()), path, settings.logits,
                settings.dtype)
    status = write_cache(
        teacher, cache_splits(data), path, settings, fingerprints, recipe.teacher.inputs, recipe.taps.teacher,
        batch_size=recipe.eval.batch_size, chunk_rows=spec.chunk_rows, overwrite=overwrite, device=device,
        max_batch_tokens=spec.max_batch_tokens, extra=extra,
        on_chunk=lambda split, done, total: logger.debug("cache: %s %d/%d", split, done, total))
    logger.info("cache: %s in %.2f s", status, time.perf_counter() - started)
    return status


def _repair(recipe: Recipe, spec: CacheSpec, path: Path, data: DataBundle, teacher: nn.Module,
            device: Any) -> str | None:
    """"repaired" after rebuilding the damaged splits of a store built for this teacher, data and settings; None
    when nothing is damaged (or the store is not this recipe's: `open_store` then says what differs)."""
    store_manifest = read_manifest(path)
    if not damaged_files(path, store_manifest):
        return None
    fingerprints = {"teacher": fingerprint_teacher(teacher),
                    "data": fingerprint_splits(cache_splits(data), recipe.teacher.inputs)}
    settings = CacheSettings(**{**store_manifest["settings"], "features": tuple(store_manifest["settings"]
                                                                                ["features"])})
    _check_stated(settings, spec, path, "Rebuild")  # the repair uses the recipe's settings: they must match
    bad = repair_cache(teacher, cache_splits(data), path, settings, fingerprints, recipe.teacher.inputs,
                       recipe.taps.teacher, batch_size=recipe.eval.batch_size, chunk_rows=spec.chunk_rows,
                       device=device)
    splits = sorted({rel.split("/", 1)[0] for rel in bad})
    logger.warning("cache: %s; rebuilt split(s) %s of %s from the teacher", "; ".join(f"{rel} {what}" for rel, what
                   in bad.items()), ", ".join(splits), path)
    return "repaired (" + ", ".join(splits) + ")"


def _check_stated(have: CacheSettings, spec: CacheSpec, path: Path, fix: str) -> None:
    """`logits` and `dtype` the recipe states must be the store's (`fix` starts the advice)."""
    for key in ("logits", "dtype"):
        wanted = getattr(spec, key)
        if wanted is not None and wanted != getattr(have, key):
            raise CacheError(f"recipe.teacher.cache.{key}: the cache in {str(path)!r} holds {key}="
                             f"{getattr(have, key)!r}, not {wanted!r}. {fix} it with `kdforge cache RECIPE "
                             "--overwrite`.")


def cached_teacher(recipe: Recipe, teacher: nn.Module | None, data: DataBundle | None = None) -> CachedTeacher:
    """The `TeacherSource` that reads the recipe's store (checked against teacher, data and settings)."""
    store = open_store(recipe, data, teacher)
    return CachedTeacher(store, recipe.teacher.inputs, recipe.taps.teacher, tail=recipe.teacher.cache.tail)


def replay_teacher(recipe: Recipe, data: DataBundle) -> ReplayTeacher:
    """The teacher of a cache-only recipe: its stored outputs, matched to inputs by content hash."""
    store = open_store(recipe, data, None)
    return ReplayTeacher(store, recipe.teacher.inputs, tail=recipe.teacher.cache.tail)
