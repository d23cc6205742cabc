"""Compact encodings of the sparse teacher signals a cache can hold: `sampled` and `topk_tail`.

Both are fixed-width per position, so every array stays a memory-mapped `.npy` of shape (rows, positions, ...)
that a shuffled batch gathers in one op, and a build stays resumable chunk by chunk (`kdforge.cache.store`).

* ``sampled`` (random-sampling KD, `kdforge.losses.sampled.Sampled`): N draws per position from the teacher at
  a proposal temperature; `samples_ids` holds the unique ids in N slots, `samples_counts` their counts
  (0 = empty slot), `entropy` the teacher's entropy (float16, so the loss value is the KL, not the
  cross-entropy), and `samples_logratio` log(p/q) per slot (float16) only when the proposal temperature is not
  1. The draws are a pure function of (seed, the row's content hash, position, draw): a resumed or re-batched
  build stores the same samples, with no random state to save.
* ``topk_tail`` (`kdforge.losses.sampled.TopKTail`): `tail_ids` (top-k ids), `tail_logprobs` (their
  log-probabilities as codes) and `tail_logmass` (float16 log of the exact tail mass).

Encodings (settings `indices` and `values`):

* indices ``packed``: ceil(log2 V) bits per id, each position's ids packed into whole bytes (15 bits for a 32k
  vocabulary instead of 16 or 32); ``plain``: int16 (V <= 32768) or int32. Counts are always packed, in
  ceil(log2(N + 1)) bits.
* values (top-k log-probabilities) ``float16``; ``uint16`` / ``uint8``: a linear code of the log-probability
  over [-LOGP_RANGE, 0] (steps of 4.9e-4 and 0.063 nats: relative probability errors of at most 0.025% and
  3.2%). A log-probability below the range is stored as its floor (such entries carry under 1e-7 of the mass).

zstd is not used: `zstandard` is not a dependency, and compressing would break the per-row memory map that
makes a shuffled read one gather. benchmarks/cache_formats.py measures the bytes and the error of each choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.cache.hashing import keyed_uniforms
from kdforge.losses.sampled import Sampled, TopKTail

# The cache settings each format reads, besides `logits`, `dtype` and `features` that every store records: the
# store's settings record and fingerprint (`CacheSettings.as_dict`), the recipe's checks (`kdforge.app.cache`) and
# the settings table of docs/cache.md follow this one table (tests/cache/test_settings_table.py).
FORMAT_SETTINGS: dict[str, tuple[str, ...]] = {
    "full": (),
    "topk": ("k",),
    "sampled": ("samples", "proposal_temperature", "seed", "indices"),
    "topk_tail": ("k", "values", "indices"),
}
FORMATS = tuple(FORMAT_SETTINGS)
FORMAT_KEYS = tuple(dict.fromkeys(key for keys in FORMAT_SETTINGS.values() for key in keys))  # every format setting
SPARSE_FORMATS = ("sampled", "topk_tail")
VALUE_CODES = ("float16", "uint16", "uint8")
INDEX_CODES = ("packed", "plain")
LOGP_RANGE = {"uint16": 32.0, "uint8": 16.0}
LOG_FLOOR = -60.0  # log tail mass when the top-k hold (numerically) everything
_CHUNK = 256  # positions sampled at a time: a float64 (chunk, V) cumulative sum


def formats_reading(key: str) -> tuple[str, ...]:
    """The formats that read setting `key` ("indices" -> sampled, topk_tail), in `FORMATS` order."""
    return tuple(name for name, keys in FORMAT_SETTINGS.items() if key in keys)


def index_bits(vocab_size: int) -> int:
    return max(1, math.ceil(math.log2(vocab_size)))


def count_bits(samples: int) -> int:
    return max(1, math.ceil(math.log2(samples + 1)))


def pack_bits(values: Tensor, bits: int) -> Tensor:
    """(..., n) non-negative integers < 2^bits -> (..., ceil(n·bits / 8)) uint8, little-endian bit order."""
    shifts = torch.arange(bits, device=values.device)
    b = ((values.long().unsqueeze(-1) >> shifts) & 1).flatten(-2)
    b = F.pad(b, (0, (-b.shape[-1]) % 8)).unflatten(-1, (-1, 8))
    return (b << torch.arange(8, device=values.device)).sum(-1).to(torch.uint8)


def unpack_bits(packed: Tensor, n: int, bits: int) -> Tensor:
    """Inverse of `pack_bits`: (..., bytes) uint8 -> (..., n) int64."""
    b = (packed.long().unsqueeze(-1) >> torch.arange(8, device=packed.device)) & 1
    b = b.flatten(-2)[..., : n * bits].unflatten(-1, (n, bits))
    return (b << torch.arange(bits, device=packed.device)).sum(-1)


def encode_indices(indices: Tensor, vocab_size: int, code: str) -> Tensor:
    if code == "packed":
        return pack_bits(indices, index_bits(vocab_size))
    return indices.to(torch.int16 if vocab_size <= 2**15 else torch.int32)


def decode_indices(stored: Tensor, n: int, vocab_size: int, code: str) -> Tensor:
    return unpack_bits(stored, n, index_bits(vocab_size)) if code == "packed" else stored.long()


def encode_logp(log_probs: Tensor, code: str) -> Tensor:
    """Log-probabilities (<= 0) -> stored codes (see the module docstring)."""
    if code == "float16":
        return log_probs.clamp(min=-65000.0).to(torch.float16)
    top = 2 ** (16 if code == "uint16" else 8) - 1
    scaled = (-log_probs.float() / LOGP_RANGE[code] * top).round().clamp(0, top)
    return scaled.to(torch.int32).to(torch.uint8) if code == "uint8" else scaled.to(torch.int32).to(torch.int16)


def decode_logp(stored: Tensor, code: str) -> Tensor:
    if code == "float16":
        return stored.float()
    top = 2 ** (16 if code == "uint16" else 8) - 1
    raw = stored.long() & 0xFFFF if code == "uint16" else stored.long()  # uint16 lives in int16 storage
    return raw.float() * (-LOGP_RANGE[code] / top)


def _unique_counts(draws: Tensor) -> tuple[Tensor, Tensor]:
    """(M, N) token ids -> (M, N) unique ids in the first slots, (M, N) their counts (0 on empty slots)."""
    ordered, _ = torch.sort(draws, dim=-1)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    slot = new.long().cumsum(-1) - 1
    counts = torch.zeros_like(ordered).scatter_add_(-1, slot, torch.ones_like(ordered))
    ids = torch.zeros_like(ordered).scatter_(-1, slot, ordered)
    return ids, counts


def sample_tokens(logits: Tensor, samples: int, proposal_temperature: float, seed: int,
                  row_keys: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Draw `samples` ids per position from softmax(logits / proposal_temperature).

    logits: (B, ..., V); row_keys: (B,) int64 content hashes. Returns unique ids (B, ..., N), counts, log(p/q)
    per slot (None when the proposal temperature is 1) and the teacher's entropy at temperature 1 (B, ...), both
    float64 for float64 logits, else float32.
    The uniforms come from `keyed_uniforms` (seed, row key, position, draw) and are inverted through the
    float64 cumulative distribution, so the draws do not depend on batching or on any random state.
    """
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.detach().reshape(-1, vocab)
    per_row = flat.shape[0] // max(len(row_keys), 1)
    keys = row_keys.detach().cpu().long().repeat_interleave(per_row)
    positions = torch.arange(per_row).repeat(len(row_keys))
    uniforms = torch.from_numpy(keyed_uniforms(seed, keys.numpy(), positions.numpy(), samples)).to(flat.device)
    ids_out, counts_out, ratio_out, entropy_out = [], [], [], []
    wide = torch.float64 if flat.dtype == torch.float64 else torch.float32
    for lo in range(0, flat.shape[0], _CHUNK):
        z = flat[lo:lo + _CHUNK].double()
        logp = torch.log_softmax(z, -1)
        logq = logp if proposal_temperature == 1.0 else torch.log_softmax(z / proposal_temperature, -1)
        cdf = logq.exp().cumsum(-1)
        u = uniforms[lo:lo + _CHUNK] * cdf[:, -1:]
        draws = torch.searchsorted(cdf, u, right=True).clamp_(max=vocab - 1)
        ids, counts = _unique_counts(draws)
        ids_out.append(ids)
        counts_out.append(counts)
        if proposal_temperature != 1.0:
            ratio_out.append((logp - logq).gather(-1, ids).to(wide))
        entropy_out.append(-(logp.exp() * logp).sum(-1).to(wide))
    shape = (*lead, samples)
    ratio = torch.cat(ratio_out).reshape(shape) if ratio_out else None
    return (torch.cat(ids_out).reshape(shape), torch.cat(counts_out).reshape(shape), ratio,
            torch.cat(entropy_out).reshape(lead))


def encode(logits: Tensor, settings: Any, row_keys: Tensor | None = None) -> dict[str, Tensor]:
    """A batch of teacher logits (B, ..., V) -> {file stem: tensor} for a `sampled` or `topk_tail` store.

    `settings` is the store's `CacheSettings` (logits, k, samples, proposal_temperature, seed, values,
    indices); `row_keys` (B,) the rows' content hashes (needed by `sampled`).
    """
    vocab = logits.shape[-1]
    if settings.logits == "sampled":
        if row_keys is None:
            raise ValueError("sampled cache: the rows' content hashes are needed to draw the samples")
        ids, counts, ratio, entropy = sample_tokens(logits, settings.samples, settings.proposal_temperature,
                                                    settings.seed, row_keys)
        out = {"samples_ids": encode_indices(ids, vocab, settings.indices),
               "samples_counts": pack_bits(counts, count_bits(settings.samples)),
               "entropy": entropy.to(torch.float16)}
        if ratio is not None:
            out["samples_logratio"] = ratio.to(torch.float16)
        return out
    if settings.logits == "topk_tail":
        k = min(settings.k, vocab)
        logp = torch.log_softmax(logits.float(), -1)
        top, ids = torch.topk(logp, k, dim=-1, sorted=True)
        covered = torch.logsumexp(top, -1)
        log_tail = torch.log1p(-covered.clamp(max=-1e-30).exp()) if k < vocab else torch.full_like(covered, LOG_FLOOR)
        # sum of exp(top) from float32 can exceed 1 by rounding: then the tail is below float32 resolution
        return {"tail_ids": encode_indices(ids, vocab, settings.indices),
                "tail_logprobs": encode_logp(top, settings.values),
                "tail_logmass": log_tail.clamp(min=LOG_FLOOR).nan_to_num(LOG_FLOOR).to(torch.float16)}
    raise ValueError(f"formats.encode: {settings.logits!r} is not a sparse format ({', '.join(SPARSE_FORMATS)})")


def decode(arrays: Mapping[str, Tensor], settings: Any, vocab_size: int) -> Sampled | TopKTail:
    """Gathered rows of a store's arrays -> the signal the losses read (`Sampled` or `TopKTail`)."""
    if settings.logits == "sampled":
        n = settings.samples
        ratio = arrays.get("samples_logratio")
        return Sampled(decode_indices(arrays["samples_ids"], n, vocab_size, settings.indices),
                       unpack_bits(arrays["samples_counts"], n, count_bits(n)),
                       None if ratio is None else ratio.float(), arrays["entropy"].float(), n, vocab_size)
    if settings.logits == "topk_tail":
        k = min(settings.k, vocab_size)
        return TopKTail(decode_logp(arrays["tail_logprobs"], settings.values),
                        decode_indices(arrays["tail_ids"], k, vocab_size, settings.indices),
                        arrays["tail_logmass"].float(), vocab_size)
    raise ValueError(f"formats.decode: {settings.logits!r} is not a sparse format ({', '.join(SPARSE_FORMATS)})")


def stems(settings: Any) -> tuple[str, ...]:
    """The array file stems a store of these settings holds per split (besides ids, hashes and features)."""
    if settings.logits == "full":
        return ("logits",)
    if settings.logits == "topk":
        return ("topk_values", "topk_indices", "logsumexp")
    if settings.logits == "topk_tail":
        return ("tail_ids", "tail_logprobs", "tail_logmass")
    ratio = ("samples_logratio",) if settings.proposal_temperature != 1.0 else ()
    return ("samples_ids", "samples_counts", "entropy", *ratio)


def bytes_per_position(settings: Any, vocab_size: int) -> int:
    """Stored bytes per position of the teacher signal (the arrays' payload, without `.npy` headers)."""
    if settings.logits == "full":
        return vocab_size * torch.empty((), dtype=getattr(torch, settings.dtype)).element_size()
    k = min(settings.k, vocab_size)
    plain_index = 2 if vocab_size <= 2**15 else 4

    def ids(n: int) -> int:
        return math.ceil(n * index_bits(vocab_size) / 8) if settings.indices == "packed" else n * plain_index

    if settings.logits == "topk":
        return k * (torch.empty((), dtype=getattr(torch, settings.dtype)).element_size() + plain_index) + 4
    if settings.logits == "topk_tail":
        return ids(k) + k * (1 if settings.values == "uint8" else 2) + 2
    n = settings.samples
    ratio = 2 * n if settings.proposal_temperature != 1.0 else 0
    return ids(n) + math.ceil(n * count_bits(n) / 8) + 2 + ratio


__all__ = ["FORMATS", "FORMAT_KEYS", "FORMAT_SETTINGS", "INDEX_CODES", "SPARSE_FORMATS", "VALUE_CODES",
           "bytes_per_position", "decode", "encode", "formats_reading", "pack_bits", "sample_tokens", "stems",
           "unpack_bits"]
