"""Teacher outputs read from the cache: `CachedTeacher` for training, `ReplayTeacher` for evaluation.

`CachedTeacher` implements the `TeacherSource` protocol. For a batch it looks the sample ids up in the
store (`batch["index"]`), checks that the inputs it is given hash to the content stored for those ids (so a
shuffled, re-split or augmented dataset is never paired with another sample's outputs: it stops with an
error), and returns the stored logits (a `TopK` when the store holds top-k entries, a `Sampled` or
`TopKTail` for the sparse formats of `kdforge.cache.formats`: losses that can read them sparsely do, and no
full-vocabulary tensor is built) and features. The per-batch cost is a handful of
tensor ops, no Python loop over rows.

For a teacher that reads renamed keys (a cross-tokenizer teacher on paired rows) the hash covers its own
tokens and the rows' alignment to the student's (`kdforge.cache.hashing.content_keys`): stored outputs are
never paired with rows tokenized or aligned otherwise.

The content check runs once per sample per run, the first time its id is read (the first epoch): the rows
of a training set do not change while it trains, and hashing every batch again every epoch cost as much as a
small student's step. `recheck()` forgets which ids were checked.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from kdforge.cache.formats import SPARSE_FORMATS, decode, stems
from kdforge.cache.hashing import TeacherInputs, content_keys, row_hashes
from kdforge.cache.store import CacheError, CacheStore, SplitArrays
from kdforge.cache.topk import Tail, TopK, reconstruct_logits
from kdforge.data.tensors import Batch
from kdforge.losses.base import Outputs
from kdforge.losses.sampled import Sampled, TopKTail

Signal = Sampled | TopKTail

PRELOAD_BYTES = 2 << 30  # on an accelerator, stores up to this size are copied to device memory once


def dense_logits(signal: Signal, directory: str) -> Tensor:
    """Dense logits where a caller needs them: a top-k + tail signal rebuilt with its tail spread evenly (an
    approximation, as for `topk`); a sampled one cannot be, so that is an error naming the way out."""
    if isinstance(signal, TopKTail):
        return signal.dense_logits()
    raise CacheError(f"teacher cache {directory!r} holds sampled tokens, which cannot stand in for the teacher's "
                     "dense logits (evaluation of a cache-only recipe, or a loss that reads dense logits). Give the "
                     "teacher model beside cache, or build a full or topk_tail cache (teacher.cache.logits).")


class _StoredTaps:
    """Stands in for `Capture` (preflight calls `check_fired`): the taps a recipe reads must be stored."""

    def __init__(self, stored: set[str], wanted: Mapping[str, str], directory: str) -> None:
        self.features: dict[str, Tensor] = {}
        missing = sorted(set(wanted) - stored)
        if missing:
            raise CacheError(
                f"recipe.taps.teacher: {missing} are not in the teacher cache {directory!r} (it stores "
                f"{sorted(stored) or 'no features'}). Add them to teacher.cache.features and rebuild the cache "
                "with `kdforge cache RECIPE --overwrite`."
            )

    def check_fired(self) -> None:
        """Nothing to check at run time: presence was checked when the cache was opened."""

    def remove(self) -> None:
        """No hooks to remove."""


class _Lookup:
    """Sample id -> row of the store, vectorised: the id itself when the stored ids are 0..N-1 in order (the
    usual case, one gather), else a binary search over the sorted ids."""

    def __init__(self, split: SplitArrays) -> None:
        ids = split.ids.long()
        self.dense = bool(torch.equal(ids, torch.arange(len(ids))))
        if self.dense or bool((ids[1:] > ids[:-1]).all()):
            self.sorted_ids, self.order = ids.clone(), None
        else:
            self.sorted_ids, self.order = torch.sort(ids)
        self.hashes = split.hashes if self.order is None else split.hashes[self.order]

    def to(self, device: torch.device) -> None:
        self.sorted_ids = self.sorted_ids.to(device)
        self.hashes = self.hashes.to(device)
        self.order = self.order.to(device) if self.order is not None else None

    def _missing(self, ids: Tensor) -> CacheError:
        known = torch.isin(ids, self.sorted_ids)
        return CacheError(
            f"teacher cache: sample ids {ids[~known][:5].tolist()} are not in the cache. It was built for other "
            "data; rebuild it with `kdforge cache RECIPE --overwrite`."
        )

    def rows(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """(rows in the store, positions in sorted order); raises if an id is not stored."""
        if self.dense:
            if len(ids):
                low, high = torch.aminmax(ids)
                if int(low) < 0 or int(high) >= len(self.sorted_ids):
                    raise self._missing(ids)
            return ids, ids
        pos = torch.searchsorted(self.sorted_ids, ids).clamp_(max=len(self.sorted_ids) - 1)
        if not torch.equal(self.sorted_ids[pos], ids):
            raise self._missing(ids)
        return (pos if self.order is None else self.order[pos]), pos


def _plain(inputs: TeacherInputs) -> list[str] | dict[str, str]:
    """The inputs as the manifest records them (a list, or a dict for renamed keys)."""
    return dict(inputs) if isinstance(inputs, Mapping) else list(inputs)


class CachedTeacher:
    """Teacher outputs from a `CacheStore` split, as a `TeacherSource` (see the module docstring).

    Args:
        store: The opened store.
        inputs: Batch keys the teacher read, or {forward argument: batch key} (the content hash covers them;
            `kdforge.cache.hashing.content_keys`).
        taps: Teacher taps the losses read (must be stored features).
        split: Which split of the store training reads ("train").
        tail: How top-k logits are rebuilt (`kdforge.cache.topk`).
        check_content: Hash each sample's inputs the first time it is read and compare them with the stored
            hashes (default).
        sparse: A top-k store's logits reach the losses as `TopK` (tail set), never rebuilt to a dense
            (rows, vocabulary) tensor; the losses must read it (`kdforge.losses.sparse.topk_refusal`). The
            application sets it; False rebuilds dense logits for any loss.
    """

    def __init__(self, store: CacheStore, inputs: TeacherInputs, taps: Mapping[str, str] | None = None,
                 split: str = "train", tail: Tail = "uniform", check_content: bool = True,
                 sparse: bool = False) -> None:
        self.store, self.inputs, self.tail, self.check_content = store, _plain(inputs), tail, check_content
        self.sparse = sparse
        if store.manifest.get("inputs") != self.inputs:
            raise CacheError(
                f"recipe.teacher.inputs: the cache in {str(store.directory)!r} was built from inputs "
                f"{store.manifest.get('inputs')}, not {self.inputs}. Rebuild it with "
                "`kdforge cache RECIPE --overwrite`."
            )
        arrays = store.split(split)
        self.lookup = _Lookup(arrays)
        self.arrays = arrays.arrays
        self.features = {stem.removeprefix("feat."): stem for stem in self.arrays if stem.startswith("feat.")}
        self.wanted = {name: self.features[name] for name in (taps or {}) if name in self.features}
        self.capture = _StoredTaps(set(self.features), taps or {}, str(store.directory))
        self.device = torch.device("cpu")
        self._pin = False
        self._checked = torch.zeros(len(arrays.ids), dtype=torch.bool)  # by store row: content already checked
        self._unchecked = len(arrays.ids)

    def recheck(self) -> None:
        """Check every sample's content again on its next read."""
        self._checked = torch.zeros_like(self._checked)
        self._unchecked = len(self._checked)

    def prepare(self, accelerator) -> None:
        """Keep the lookup on the training device; copy the payload there too when it is small enough."""
        self.device = accelerator.device
        self.lookup.to(self.device)
        self._checked = self._checked.to(self.device)
        if self.device.type != "cpu":
            if self.store.nbytes() <= PRELOAD_BYTES:
                self.arrays = {k: v.to(self.device) for k, v in self.arrays.items()}
            else:
                self._pin = torch.cuda.is_available()

    def _gather(self, stem: str, rows: Tensor) -> Tensor:
        source = self.arrays[stem]
        if source.device != self.device:  # memory-mapped on the host: gather there, then one transfer
            part = source[rows.cpu()]
            if self._pin:
                part = part.pin_memory()
            return part.to(self.device, non_blocking=True)
        return source[rows]

    def read(self, ids: Tensor, inputs: Batch | None = None) -> tuple[Tensor | TopK | Signal, dict[str, Tensor]]:
        """Stored logits (a tensor; `TopK` for a top-k store; `Sampled` / `TopKTail` for the sparse formats of
        `kdforge.cache.formats`, decoded from the gathered rows only) and features for sample ids `ids`."""
        rows, pos = self.lookup.rows(ids.to(self.device).long())
        if inputs is not None and self.check_content and self._unchecked:
            self._check(ids, rows, pos, inputs)
        features = {name: self._gather(stem, rows).float() for name, stem in self.wanted.items()}
        kind = self.store.settings.logits
        if kind == "full":
            return self._gather("logits", rows).float(), features
        if kind in SPARSE_FORMATS:
            arrays = {stem: self._gather(stem, rows) for stem in stems(self.store.settings)}
            return decode(arrays, self.store.settings, self.store.vocab_size), features
        topk = TopK(self._gather("topk_values", rows), self._gather("topk_indices", rows),
                    self._gather("logsumexp", rows), self.store.vocab_size, self.tail)
        return topk, features

    @property
    def holds_topk(self) -> bool:
        """The store holds a sparse signal (top-k, sampled or top-k + tail), not full logits."""
        return self.store.settings.logits != "full"

    def _check(self, ids: Tensor, rows: Tensor, pos: Tensor, inputs: Batch) -> None:
        """Hash the inputs of the samples not checked yet in this run; raise on a mismatch."""
        fresh = ~self._checked[rows]
        if not bool(fresh.all()):
            if not bool(fresh.any()):
                return
            ids, rows, pos = ids[fresh.to(ids.device)], rows[fresh], pos[fresh]
            inputs = {key: inputs[key][fresh.to(inputs[key].device)] for key in content_keys(self.inputs, inputs)}
        hashes = row_hashes(inputs, self.inputs)
        if not torch.equal(hashes, self.lookup.hashes[pos]):
            bad = ids[(hashes != self.lookup.hashes[pos]).to(ids.device)][:5].tolist()
            if isinstance(self.inputs, dict):
                raise CacheError(
                    f"teacher cache {str(self.store.directory)!r}: the cross-tokenizer rows of samples {bad} "
                    f"({', '.join(content_keys(self.inputs, inputs))}) differ from the ones the cache was built "
                    "from: the text, a tokenizer or the alignment changed since. Rebuild it with `kdforge cache "
                    "RECIPE --overwrite`."
                )
            raise CacheError(
                f"teacher cache {str(self.store.directory)!r}: the inputs of samples {bad} differ from the ones "
                "the cache was built from. The data changed since (rebuild with `kdforge cache RECIPE "
                "--overwrite`), or inputs are augmented: the cache holds one view per sample, so train with "
                "the online teacher (remove teacher.cache) when augmenting."
            )
        newly = rows.unique()
        newly = newly[~self._checked[newly]]
        self._checked[newly] = True
        self._unchecked -= len(newly)

    def __call__(self, batch: Batch) -> Outputs:
        if "index" not in batch:
            raise CacheError("teacher cache: batches carry no 'index' (sample ids); build the data as TensorData, "
                             "which adds one, to train from a cache.")
        logits, features = self.read(batch["index"], batch)
        if isinstance(logits, TopK) and not self.sparse:
            logits = reconstruct_logits(logits, self.tail)
        elif not isinstance(logits, Tensor) and not self.sparse:
            logits = dense_logits(logits, str(self.store.directory))
        return Outputs(logits=logits, features=features)

    def close(self) -> None:
        """Nothing to release; the memory maps close with the store."""


class ReplayTeacher(nn.Module):
    """The teacher as its cache, for a run given only `teacher: {cache: DIR}`: evaluation needs teacher logits
    on the validation and test splits, which `kdforge cache` stores too. Inputs are matched by content hash;
    an input that was never cached is an error (the teacher itself is not there to run).

    It holds no weights. `stand_in` is one zero expanded to the teacher's parameter count (from the
    manifest), so that reports count the teacher's parameters and evaluation finds a device.
    """

    def __init__(self, store: CacheStore, inputs: TeacherInputs, tail: Tail = "uniform") -> None:
        super().__init__()
        if isinstance(inputs, Mapping):
            raise CacheError(
                f"recipe.teacher: the teacher cache {str(store.directory)!r} stands in for a teacher that reads "
                "renamed keys (cross-tokenizer rows), whose outputs are matched by its tokens and the rows' "
                "alignment, which evaluation does not pass to it. Give the teacher model (model + checkpoint, or "
                "path) beside cache."
            )
        self.store, self.inputs, self.tail = store, list(inputs), tail
        self._splits = [store.split(name) for name in store.manifest["splits"]]
        hashes = [split.hashes for split in self._splits]
        self._sorted, self._order = torch.sort(torch.cat(hashes))
        self._offsets = torch.tensor([0] + [len(h) for h in hashes]).cumsum(0)
        params = int(store.manifest.get("teacher", {}).get("params") or 1)
        self.stand_in = nn.Parameter(torch.zeros(1).expand(params), requires_grad=False)

    def forward(self, *args: Tensor, **kwargs: Tensor) -> Tensor:
        batch = dict(zip(self.inputs, args, strict=True)) if args else kwargs
        hashes = row_hashes(batch, self.inputs).cpu()
        pos = torch.searchsorted(self._sorted, hashes).clamp_(max=len(self._sorted) - 1)
        found = self._sorted[pos] == hashes
        if not bool(found.all()):
            raise CacheError(
                f"recipe.teacher: this run has only the teacher cache {str(self.store.directory)!r}, and "
                f"{int((~found).sum())} input(s) were never cached. Give the teacher model (model + checkpoint, or "
                "path) beside cache, or cache these inputs."
            )
        flat = self._order[pos]
        which = torch.searchsorted(self._offsets, flat, right=True) - 1
        rows = flat - self._offsets[which]
        out: Tensor | None = None
        for index in which.unique().tolist():
            selected = which == index
            arrays = self._splits[index].arrays
            if "logits" in arrays:
                part = arrays["logits"][rows[selected]].float()
            elif self.store.settings.logits in SPARSE_FORMATS:
                settings, r = self.store.settings, rows[selected]
                signal = decode({stem: arrays[stem][r] for stem in stems(settings)}, settings, self.store.vocab_size)
                part = dense_logits(signal, str(self.store.directory))
            else:
                r = rows[selected]
                part = reconstruct_logits(TopK(arrays["topk_values"][r], arrays["topk_indices"][r],
                                               arrays["logsumexp"][r], self.store.vocab_size), self.tail)
            if out is None:
                out = part.new_empty((len(hashes), *part.shape[1:]))
            out[selected] = part
        return out.to(next(iter(batch.values())).device)
