"""Conjunctions of literals as ternary rows t in {-1, 0, +1}^L (the author's `AndOfLiterals` encoding).

t_i = 0: literal i is free; t_i = +1 or -1: the conjunction requires z_i = t_i. AND_t(z) = +1 when every
required literal matches and -1 otherwise; the empty conjunction (all zeros, the root) is the constant +1.
Rows are identified by a random 64-bit hash (a sum of one random word per (literal, sign)), which makes the
parent and sibling of a row, and deduplication, vectorised lookups.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 4096


class ConjunctionHasher:
    """h(t) = sum over required literals i of R[i, t_i] (uint64 arithmetic, wrapping)."""

    def __init__(self, n_literals: int, seed: int = 12345) -> None:
        rng = np.random.default_rng(seed)
        self.plus = rng.integers(1, 2**63, size=n_literals, dtype=np.int64).astype(np.uint64)
        self.minus = rng.integers(1, 2**63, size=n_literals, dtype=np.int64).astype(np.uint64)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        with np.errstate(over="ignore"):
            h = ((rows == 1).astype(np.uint64) * self.plus).sum(axis=1, dtype=np.uint64)
            h += ((rows == -1).astype(np.uint64) * self.minus).sum(axis=1, dtype=np.uint64)
        return h


def membership(Z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N, C) bool: sample j satisfies conjunction c. Z is (N, L) in {-1,+1}, rows (C, L) ternary."""
    nnz = np.abs(rows).sum(axis=1)
    return (Z.astype(np.float32) @ rows.T.astype(np.float32)) > (nnz - 0.5)


def and_values(Z: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N, C) float32 AND values in {-1, +1}."""
    return np.where(membership(Z, rows), 1.0, -1.0).astype(np.float32)


def class_counts(Z: np.ndarray, y: np.ndarray, n_classes: int, rows: np.ndarray) -> np.ndarray:
    """(C, K) int64: how many samples of each class satisfy each conjunction (chunked over C)."""
    onehot = np.zeros((len(y), n_classes), dtype=np.float32)
    onehot[np.arange(len(y)), y] = 1.0
    out = np.zeros((len(rows), n_classes), dtype=np.int64)
    for start in range(0, len(rows), _CHUNK):
        inside = membership(Z, rows[start:start + _CHUNK]).astype(np.float32)
        out[start:start + _CHUNK] = np.rint(inside.T @ onehot).astype(np.int64)
    return out


def extend(rows: np.ndarray) -> np.ndarray:
    """All one-literal extensions c AND (z_i = s) of the given rows, over free i and s in {+1,-1} (deduplicated)."""
    if len(rows) == 0:
        return rows
    n_literals = rows.shape[1]
    parent, literal = np.nonzero(rows == 0)
    out = np.repeat(rows[parent], 2, axis=0)
    signs = np.tile(np.array([1, -1], dtype=rows.dtype), len(parent))
    out[np.arange(len(out)), np.repeat(literal, 2)] = signs
    _, first = np.unique(ConjunctionHasher(n_literals)(out), return_index=True)
    return out[np.sort(first)]


def all_conjunctions(n_literals: int, max_depth: int) -> np.ndarray:
    """Every conjunction with at most `max_depth` literals: sum_{i<=d} 2^i C(L, i) rows (root first)."""
    levels = [np.zeros((1, n_literals), dtype=np.int8)]
    for _ in range(max_depth):
        levels.append(extend(levels[-1]))
    return np.concatenate(levels)
