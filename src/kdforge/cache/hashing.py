"""Content hashes of samples and fingerprints of teachers and datasets.

`row_hashes` gives every sample a 62-bit hash of its input bytes, computed as a batched tensor operation
(no Python loop over rows), so the teacher cache can check every batch it serves against the content it
stored for those sample ids, at a cost of a few tensor ops per step. It is a universal hash with fixed
weights: collisions between different inputs are vanishingly unlikely by accident (about 2^-62 per pair),
but it is not cryptographic. The fingerprints of teacher weights and whole datasets use SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

HASH_VERSION = "rowhash-v1"
_PRIME = (1 << 31) - 1  # Mersenne prime: products of two residues fit in int64
_WEIGHTS: dict[tuple[int, int, str], Tensor] = {}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random sequence that does not depend on the torch or numpy RNG version."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _weights(width: int, salt: int, device: torch.device) -> Tensor:
    key = (width, salt, str(device))
    if key not in _WEIGHTS:
        raw = _splitmix64(np.arange(width, dtype=np.uint64) + np.uint64(salt << 40))
        values = (raw % np.uint64(_PRIME - 1)).astype(np.int64) + 1
        _WEIGHTS[key] = torch.from_numpy(values).to(device)
    return _WEIGHTS[key]


def _as_words(t: Tensor) -> Tensor:
    """(B, ...) any dtype -> (B, W) int64 holding the raw bits as non-negative 16/32-bit words."""
    flat = t.detach().reshape(len(t), -1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    size = flat.element_size()
    if size >= 4:
        words = flat.contiguous().view(torch.int32).long() & 0xFFFFFFFF
    elif size == 2:
        words = flat.contiguous().view(torch.int16).long() & 0xFFFF
    else:
        words = flat.contiguous().view(torch.uint8).long()
    return words


def row_hashes(batch: Mapping[str, Tensor], keys: Sequence[str]) -> Tensor:
    """(B,) int64 hash of each row's content over the named input keys (in that order)."""
    words = torch.cat([_as_words(batch[key]) for key in keys], dim=1) % _PRIME
    width = words.shape[1]
    high = (words * _weights(width, 1, words.device)).remainder_(_PRIME).sum(1).remainder_(_PRIME)
    low = (words * _weights(width, 2, words.device)).remainder_(_PRIME).sum(1).remainder_(_PRIME)
    return high * _PRIME + low


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
