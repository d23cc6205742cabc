"""Content hashes of samples and fingerprints of teachers and datasets.

`row_hashes` gives every sample a 62-bit hash of its input bytes, computed as a batched tensor operation
(no Python loop over rows), so the teacher cache can check every batch it serves against the content it
stored for those sample ids, at a cost of a few tensor ops per step. It is a universal hash with fixed
weights: collisions between different inputs are vanishingly unlikely by accident (about 2^-62 per pair),
but it is not cryptographic. The fingerprints of teacher weights and whole datasets use SHA-256.

Which keys a row's hash covers is decided in one place, `content_keys`: the keys the teacher reads, and for a
teacher that reads renamed keys (a cross-tokenizer teacher on paired rows) also the alignment of its tokens to
the student's, which the stored outputs are only valid with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from kdforge.lm.cross_data import ALIGNMENT_KEYS

TeacherInputs = Sequence[str] | Mapping[str, str]  # batch keys, or {forward argument: batch key}
# what a cross-tokenizer row's outputs are valid with besides the teacher's own tokens: the student's tokens and
# the span ids pairing the two (kdforge.lm.cross_data)
CROSS_TOKENIZER_KEYS = ("input_ids", *ALIGNMENT_KEYS)
HASH_VERSION = "rowhash-v2"
_PRIME = (1 << 31) - 1
_WEIGHT_BITS = 21
# |16-bit word| * weight < 2^15 * 2^21, so a sum of up to 2^16 of them stays below 2^53: float64 holds every
# partial sum exactly, whatever order a matrix multiply adds them in (the hash is the same on any device).
_CHUNK = 1 << 16
_WEIGHTS: dict[tuple[int, str], Tensor] = {}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random sequence that does not depend on the torch or numpy RNG version."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _weights(width: int, device: torch.device) -> Tensor:
    """(width, 2) float64 integer weights in [1, 2^21): two independent linear hashes."""
    key = (width, str(device))
    if key not in _WEIGHTS:
        raw = _splitmix64(np.arange(2 * width, dtype=np.uint64)) >> np.uint64(64 - _WEIGHT_BITS)
        values = raw.astype(np.float64).reshape(width, 2) + 1.0
        _WEIGHTS[key] = torch.from_numpy(values).to(device)
    return _WEIGHTS[key]


def _as_words(t: Tensor) -> Tensor:
    """(B, ...) any dtype -> (B, W) float64 holding the raw bits as signed 16-bit words (bytes for 1-byte
    dtypes); integers, so float64 arithmetic on them is exact."""
    flat = t.detach().reshape(len(t), -1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.element_size() == 1:
        return flat.contiguous().view(torch.uint8).double()
    return flat.contiguous().view(torch.int16).double()


def content_keys(inputs: TeacherInputs, available: Collection[str]) -> list[str]:
    """The batch keys a cache entry's content hash covers, in order.

    A list of keys is itself (the fingerprints of plain stores stay as they were). A mapping {forward argument:
    batch key} is a teacher reading renamed keys: its batch keys (sorted: the mapping's order changes nothing),
    then those of `CROSS_TOKENIZER_KEYS` the data carries (`available`: the batch's or dataset's keys). Its
    outputs sit at its own token positions and are read at the spans the alignment names, so rows re-tokenized
    on either side, or re-aligned, must not match.
    """
    if not isinstance(inputs, Mapping):
        return list(inputs)
    keys = sorted(set(inputs.values()))
    return keys + [key for key in CROSS_TOKENIZER_KEYS if key in available and key not in keys]


def row_hashes(batch: Mapping[str, Tensor], inputs: TeacherInputs) -> Tensor:
    """(B,) int64 hash (62 bits) of each row's content over the keys `content_keys(inputs, batch)` names (in
    that order).

    Two linear hashes of the row's 16-bit words with fixed pseudo-random weights, computed as one exact
    float64 matrix product and reduced modulo 2^31 - 1: a few tensor ops per batch, on the batch's device.
    """
    keys = content_keys(inputs, batch)
    rows = len(batch[keys[0]])
    if rows == 0:
        return torch.empty(0, dtype=torch.long, device=batch[keys[0]].device)
    parts = [_as_words(batch[key]) for key in keys]
    words = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    weights = _weights(words.shape[1], words.device)
    sums = None
    for start in range(0, words.shape[1], _CHUNK):  # one product for rows of up to 64k words (128 KiB)
        part = (words[:, start:start + _CHUNK] @ weights[start:start + _CHUNK]).long() % _PRIME
        sums = part if sums is None else (sums + part) % _PRIME
    return sums[:, 0] * _PRIME + sums[:, 1]


def data_fingerprint(splits: Mapping[str, tuple[Tensor, Tensor]], keys: Sequence[str]) -> str:
    """SHA-256 over each split's (sample id, content hash) pairs in id order: any change of content, ids or
    their pairing changes it; the order rows happen to be stored in does not."""
    digest = hashlib.sha256(f"{HASH_VERSION}|{','.join(keys)}".encode())
    for name in sorted(splits):
        ids, hashes = splits[name]
        order = torch.argsort(ids)
        digest.update(f"|{name}|{len(ids)}|".encode())
        digest.update(ids[order].cpu().numpy().astype("<i8").tobytes())
        digest.update(hashes[order].cpu().numpy().astype("<i8").tobytes())
    return digest.hexdigest()


def teacher_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the teacher's class and state dict (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"|{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def keyed_uniforms(seed: int, keys: np.ndarray, positions: np.ndarray, draws: int) -> np.ndarray:
    """(M, draws) float64 uniforms in [0, 1), a pure function of (seed, key, position, draw index): what a
    sampled cache draws its tokens with, so the same row gets the same draws however it is batched or resumed.
    `keys` and `positions` are (M,) integers (a row's content hash, and the position within the row)."""
    with np.errstate(over="ignore"):
        base = (keys.astype(np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
                ^ _splitmix64(positions.astype(np.uint64) + np.uint64(seed) * np.uint64(0x632BE59BD9B4E019)))
        counters = _splitmix64(base)[:, None] + np.arange(draws, dtype=np.uint64)[None, :] * np.uint64(
            0xD1B54A32D192ED03)
    return (_splitmix64(counters) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


TOKENIZER_HASH_VERSION = "tokenizer-v1"


def tokenizer_fingerprint(tokenizer: object) -> str | None:
    """SHA-256 of a tokenizer's serialised vocabulary and merges (`tokenizer.json` text, from a
    `tokenizers.Tokenizer`, a transformers fast tokenizer, or kdforge's `TextTokenizer`), or of its sorted
    vocabulary when it has no such text; None when neither is available. A cache records it so a store built
    with one tokenizer is refused for another (`kdforge.app.cache`)."""
    text = None
    to_json = getattr(tokenizer, "to_json", None)
    if callable(to_json):
        text = to_json()
    if text is None:
        backend = getattr(tokenizer, "backend_tokenizer", None) or tokenizer
        to_str = getattr(backend, "to_str", None)
        if callable(to_str):
            text = to_str()
    if text is None:
        get_vocab = getattr(tokenizer, "get_vocab", None)
        if not callable(get_vocab):
            return None
        text = json.dumps(sorted(get_vocab().items()))
    else:  # padding/truncation state is not the tokenizer: drop it
        parsed = json.loads(text)
        parsed.pop("padding", None)
        parsed.pop("truncation", None)
        text = json.dumps(parsed, sort_keys=True)
    return hashlib.sha256(f"{TOKENIZER_HASH_VERSION}|{text}".encode()).hexdigest()
