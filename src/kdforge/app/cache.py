"""A recipe's teacher cache: build it (`kdforge cache`, or the first `kdforge distill` that needs it), and
open it for training (`CachedTeacher`) or, when the recipe gives only the cache, for evaluation
(`ReplayTeacher`). Every check here names the recipe field to change; the store itself is `kdforge.cache`.
"""

from __future__ import annotations

import logging
import shutil
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge.cache.formats import FORMAT_KEYS, FORMAT_SETTINGS, formats_reading
from kdforge.cache.hashing import TeacherInputs, teacher_fingerprint, tokenizer_fingerprint
from kdforge.cache.store import (
    CacheError,
    CacheSettings,
    CacheStore,
    damaged_files,
    fingerprint_splits,
    hash_splits,
    partial_dir,
    read_manifest,
    repair_cache,
    write_cache,
)
from kdforge.cache.teacher import CachedTeacher, ReplayTeacher
from kdforge.data import DataBundle
from kdforge.errors import RecipeError
from kdforge.io import DISK_ERRNOS, os_error
from kdforge.llm.served import SERVED_PREFIX, ServedSettings, ServedTeacher
from kdforge.models import count_params
from kdforge.processes import process_state
from kdforge.recipe import CacheSpec, Recipe
from kdforge.types import IGNORE_INDEX, TensorData
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
        served = isinstance(teacher, ServedTeacher)  # no weights here: its server, model and N stand for them
        _TEACHER_FINGERPRINTS[teacher] = teacher.fingerprint() if served else teacher_fingerprint(teacher)
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
    served = (recipe.teacher.model or "").startswith(SERVED_PREFIX)  # it gives top-k log-probs: stored as topk
    logits = spec.logits or ("topk" if served else "full")
    dtype = spec.dtype or ("float32" if logits == "full" else "float16")
    features = tuple(spec.features) if spec.features is not None else tuple(recipe.taps.teacher)
    stated = {key: getattr(spec, key) for key in FORMAT_KEYS if getattr(spec, key) is not None}
    if logits == "topk_tail":
        stated.setdefault("k", TOPK_TAIL_K)
    if served:
        top = recipe.teacher.args.get("top_logprobs", ServedSettings.top_logprobs)
        if stated.setdefault("k", top) != top:
            raise RecipeError(f"recipe.teacher.cache.k: a served teacher stores its top_logprobs ({top}) entries per "
                              f"position; remove k or set k: {top}.")
    for key in stated:  # k with full logits is ignored, as it always was
        if key != "k" and key not in FORMAT_SETTINGS[logits]:
            raise RecipeError(f"recipe.teacher.cache.{key}: does not apply to logits: {logits} (it is a setting of "
                              f"{', '.join(formats_reading(key))}); remove it.")
    return CacheSettings(**{"logits": logits, "k": 64, "dtype": dtype, "features": features, **stated})


TOPK_TAIL_K = 32  # benchmarks/results/cache_formats.md
ALIGNMENTS = {"next": "labels[t] = input_ids[t+1]", "same": "labels[t] = input_ids[t]"}  # kdforge.lm.rows: next


def alignment_of(data: TensorData, rows: int = 1024) -> str | None:
    """How labels sit against input ids in `data`'s language-model rows, read from the rows themselves (the
    first `rows`): kdforge's causal-LM rows (`kdforge.lm.rows.lm_rows`) have labels[t] = input_ids[t+1];
    a dataset made with the model-shifts-labels convention has labels[t] = input_ids[t]. None when the data
    has no (N, T) labels beside input_ids (not a language model), "other" when neither holds."""
    ids, labels = data.tensors.get("input_ids"), data.tensors.get("labels")
    if ids is None or labels is None or labels.dim() != 2 or labels.shape != ids.shape:
        return None
    ids, labels = ids[:rows], labels[:rows]
    counted = labels != IGNORE_INDEX
    if not bool(counted.any()):
        return None
    if not bool(counted[:, -1].any()) and torch.equal(labels[:, :-1][counted[:, :-1]], ids[:, 1:][counted[:, :-1]]):
        return ALIGNMENTS["next"]
    if torch.equal(labels[counted], ids[counted]):
        return ALIGNMENTS["same"]
    return "other"


def text_record(data: DataBundle) -> dict[str, str | None]:
    """What a cache records of the data's text side: the tokenizer's hash and the position alignment."""
    tokenizer = getattr(data, "tokenizer", None)
    return {"tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
            "alignment": alignment_of(data.teacher_train)}


def _check_text(store: CacheStore, data: DataBundle) -> None:
    """A store built with another tokenizer or another label alignment is refused (stores from before this
    record existed, and data without a tokenizer, are not checked)."""
    have, want = store.manifest.get("text") or {}, text_record(data)
    for key, field, what in (("tokenizer", "recipe.data", "tokenizer"),
                             ("alignment", "recipe.data", "position alignment")):
        if have.get(key) and want[key] and have[key] != want[key]:
            shown = (lambda v: v[:12]) if key == "tokenizer" else (lambda v: repr(v))
            raise CacheError(f"{field}: the teacher cache in {str(store.directory)!r} was built with another {what} "
                             f"({shown(have[key])}, this data's is {shown(want[key])}); rebuild it with "
                             "`kdforge cache RECIPE --overwrite`.")


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
    if spec.k is not None and "k" in FORMAT_SETTINGS[have.logits] and spec.k != have.k:
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
    if data is not None:  # first: another tokenizer also changes the data, and is the more precise cause
        _check_text(store, data)
    store.check(expected, what={**_teacher_account(store, teacher), **_data_account(recipe.teacher.inputs)})
    _check_settings(store, spec, recipe)
    return store


def _data_account(inputs: TeacherInputs) -> dict[str, str]:
    """What other data means for a teacher reading renamed keys: its row hashes also cover the student's tokens
    and the spans pairing them with the teacher's (`kdforge.cache.hashing.content_keys`), so rows re-tokenized
    on either side, or re-aligned, differ like any other data and are named as such."""
    if not isinstance(inputs, Mapping):
        return {}
    return {"data": "other cross-tokenizer rows (the text, the teacher's or the student's tokens, or their alignment "
                    "differ)"}


def _teacher_account(store: CacheStore, teacher: nn.Module | None) -> dict[str, str]:
    """What another teacher means when one side is served: a served teacher has no weights, its fingerprint
    covers `ServedSettings.identity()` (server URL, model name, protocol, top_logprobs, vocab_size), which the
    store records beside it (`_build`), so the account names the entries that differ."""
    recorded = (store.manifest.get("teacher") or {}).get("server")
    if isinstance(teacher, ServedTeacher):
        identity = teacher.settings.identity()
        if not isinstance(recorded, Mapping):
            return {"teacher": "another teacher (not this served model: the cache records no server)"}
        differ = [key for key in identity if recorded.get(key) != identity[key]]
        if not differ:  # the record agrees, the fingerprint does not: say what it covers
            *rest, last = identity
            return {"teacher": f"another teacher (another served model: its {', '.join(rest)} or {last} differ)"}
        return {"teacher": "another teacher (another served model: " + ", ".join(
            f"{key} {recorded.get(key)!r} in the cache, {identity[key]!r} here" for key in differ) + ")"}
    if isinstance(recorded, Mapping):
        return {"teacher": f"another teacher (the served model at {recorded.get('url')!r}, not this one)"}
    return {}


def ensure_cache(recipe: Recipe, data: DataBundle, teacher: nn.Module, directory: str | Path | None = None,
                 overwrite: bool = False, repair: bool = False) -> CacheInfo:
    """Use the recipe's store if it matches; build (or finish building) it when it is missing; rebuild it all
    with `overwrite`; with `repair` (`kdforge cache`), rebuild only the splits whose files are damaged.

    With several processes a store to build (or to finish) is built by all of them, each computing and writing
    its own rows (`write_cache`'s shards); an existing store is checked, and repaired, by the main process
    while the others wait. Then every process reads the same store.
    """
    spec, path = cache_spec(recipe, directory)
    state = process_state()  # under torchrun on CPU too
    status = "up to date"
    # no process can write the manifest before all of them have entered the build, so they all see the same
    shared = state.num_processes > 1 and (overwrite or not (path / "manifest.json").is_file())
    if state.is_main_process or shared:
        try:
            shards = ((state.process_index, state.num_processes, state.wait_for_everyone) if shared else (0, 1, None))
            status = _build(recipe, spec, path, data, teacher, overwrite, repair, shards)
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
           overwrite: bool, repair: bool = False, shards: tuple[int, int, Any] = (0, 1, None)) -> str:
    """Build, finish, check or repair the store; `shards` is (rank, world size, barrier) for `write_cache`."""
    settings = build_settings(spec, recipe)
    device = next(teacher.parameters()).device if any(True for _ in teacher.parameters()) else "cpu"
    if (path / "manifest.json").is_file() and not overwrite:
        if repair:
            status = _repair(recipe, spec, path, data, teacher, device)
            if status is not None:
                return status
        open_store(recipe, data, teacher, path)  # a usable store, or an error saying what differs
        return "up to date"
    hashed = hash_splits(cache_splits(data), recipe.teacher.inputs)  # for the fingerprint and the store
    fingerprints = {"teacher": fingerprint_teacher(teacher),
                    "data": fingerprint_splits(cache_splits(data), recipe.teacher.inputs, hashed)}
    teacher_spec = recipe.teacher
    extra: dict[str, Any] = {
        "teacher": {"params": count_params(teacher), "model": teacher_spec.model or teacher_spec.path,
                    **({"server": teacher.settings.identity()} if isinstance(teacher, ServedTeacher) else {})},
        "text": text_record(data),
        "recipe": recipe.name, "kdforge": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    started = time.perf_counter()
    logger.info("cache: running the teacher once over %s into %s (%s logits, %s)",
                ", ".join(f"{k}={len(v)}" for k, v in cache_splits(data).items()), path, settings.logits,
                settings.dtype)
    status = write_cache(
        teacher, cache_splits(data), path, settings, fingerprints, recipe.teacher.inputs, recipe.taps.teacher,
        batch_size=recipe.eval.batch_size, chunk_rows=spec.chunk_rows, overwrite=overwrite, device=device,
        max_batch_tokens=spec.max_batch_tokens, extra=extra, rank=shards[0], world=shards[1], barrier=shards[2],
        hashed=hashed, on_chunk=lambda split, done, total: logger.debug("cache: %s %d/%d", split, done, total))
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
    """`logits`, `dtype` and the format's own settings (samples, values, ...) the recipe states must be the
    store's (`fix` starts the advice)."""
    own = [key for key in FORMAT_SETTINGS[have.logits] if key != "k"]  # k: compared in `_check_settings`
    for key in ("logits", "dtype", *own):
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
