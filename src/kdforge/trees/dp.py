"""TREE-DP: the best decision tree whose nodes are all in a given set of conjunctions, for every leaf budget.

This is the author's `get_best_tree_dyn_prog` [CODE, PAC_DISTILLATION.md 2.2] with sizes counted in leaves
(a full binary tree with s leaves has 2s - 1 nodes, the code's size) and any number of classes:

    leaf(c)   = max_k #{j : x_j satisfies c, y_j = k}       (samples the best constant label gets right)
    V[c][s]   = max( leaf(c),  max over splits (c -> c-, c+) and a + b = s of V[c-][a] + V[c+][b] )

A split of c on literal i exists when both c AND (z_i = -1) and c AND (z_i = +1) are in the set. Conjunctions
are processed from deepest to shallowest; the inner max is a (max, +)-convolution over budgets, vectorised over
all splits of one depth. Counts are integers, so ties are exact; backtracking prefers a leaf, then the
smallest budgets that reach the same value, so the returned tree is the smallest optimal one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdforge.trees.conjunctions import ConjunctionHasher, class_counts
from kdforge.trees.literals import Literals
from kdforge.trees.tree import Tree


@dataclass
class DPResult:
    """The filled table and what backtracking needs."""

    rows: np.ndarray  # (C, L) ternary conjunctions; row `root` is all zeros
    counts: np.ndarray  # (C, K) class counts of the DP samples in each conjunction
    value: np.ndarray  # (C, S + 1) V[c][s]; column 0 unused
    edges: dict[int, list[tuple[int, int, int]]]  # parent -> [(literal, minus child, plus child)]
    root: int
    n_samples: int

    @property
    def max_leaves(self) -> int:
        return self.value.shape[1] - 1

    def best_correct(self, leaves: int) -> int:
        """Samples the best tree with at most `leaves` leaves classifies like the labels."""
        return int(self.value[self.root, leaves])

    def smallest_budget(self, tolerance: float = 0.0) -> int:
        """The fewest leaves whose best agreement is within `tolerance` (a fraction of samples) of the best."""
        best = self.value[self.root, self.max_leaves]
        ok = np.nonzero(self.value[self.root, 1:] >= best - tolerance * self.n_samples - 1e-9)[0]
        return int(ok[0]) + 1

    def build(self, leaves: int, literals: Literals) -> Tree:
        """Backtrack the best tree with at most `leaves` leaves into a `Tree`."""
        tree = Tree()

        def smallest(c: int, budget: int) -> int:
            target = self.value[c, budget]
            return int(np.nonzero(self.value[c, 1:budget + 1] >= target)[0][0]) + 1

        def rec(c: int, budget: int) -> int:
            budget = smallest(c, budget)
            node = tree.add_node(self.counts[c])
            target = self.value[c, budget]
            if budget == 1 or self.counts[c].max() >= target:
                return node
            for literal, minus, plus in self.edges.get(c, []):
                for a in range(1, budget):
                    if self.value[minus, a] + self.value[plus, budget - a] == target:
                        left = rec(minus, a)
                        right = rec(plus, budget - a)
                        tree.set_split(node, literals.feature[literal], literals.threshold[literal], left, right)
                        return node
            raise AssertionError("TREE-DP backtracking found no split reaching the table value")

        rec(self.root, leaves)
        return tree


def split_edges(rows: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(parent, literal, minus child, plus child) for every split with parent and both children in `rows`."""
    hasher = ConjunctionHasher(rows.shape[1])
    hashes = hasher(rows)
    order = np.argsort(hashes)
    sorted_hashes = hashes[order]

    def lookup(h: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(sorted_hashes, h), 0, len(sorted_hashes) - 1)
        return np.where(sorted_hashes[pos] == h, order[pos], -1)

    plus_child, literal = np.nonzero(rows == 1)
    with np.errstate(over="ignore"):
        parent_hash = hashes[plus_child] - hasher.plus[literal]
        minus_hash = parent_hash + hasher.minus[literal]
    parent, minus_child = lookup(parent_hash), lookup(minus_hash)
    keep = (parent >= 0) & (minus_child >= 0)
    return list(zip(parent[keep].tolist(), literal[keep].tolist(), minus_child[keep].tolist(),
                    plus_child[keep].tolist(), strict=True))


def tree_dp(rows: np.ndarray, Z: np.ndarray, y: np.ndarray, n_classes: int, max_leaves: int) -> DPResult:
    """Fill V for budgets 1..max_leaves over the conjunctions `rows` (must contain the all-zero root)."""
    if max_leaves < 1:
        raise ValueError(f"tree_dp: max_leaves must be >= 1; got {max_leaves}.")
    rows = np.asarray(rows, dtype=np.int8)
    roots = np.nonzero(~rows.any(axis=1))[0]
    assert len(roots) >= 1, "the conjunction set must contain the root (all-zero row)"
    counts = class_counts(Z, np.asarray(y), n_classes, rows)
    value = np.repeat(counts.max(axis=1)[:, None], max_leaves + 1, axis=1).astype(np.int64)
    value[:, 0] = -1
    depth = np.abs(rows).sum(axis=1)
    all_edges = split_edges(rows)
    edges: dict[int, list[tuple[int, int, int]]] = {}
    for parent, literal, minus, plus in all_edges:
        edges.setdefault(parent, []).append((literal, minus, plus))
    if all_edges:
        arr = np.asarray(all_edges, dtype=np.int64)
        parent_depth = depth[arr[:, 0]]
        for d in sorted(set(parent_depth.tolist()), reverse=True):
            sel = arr[parent_depth == d]
            vm, vp = value[sel[:, 2]], value[sel[:, 3]]  # children are final: they are one level deeper
            cand = np.full((len(sel), max_leaves + 1), -1, dtype=np.int64)
            for s in range(2, max_leaves + 1):
                a = np.arange(1, s)
                cand[:, s] = (vm[:, a] + vp[:, s - a]).max(axis=1)
            np.maximum.at(value, sel[:, 0], cand)
    return DPResult(rows, counts, value, edges, int(roots[0]), len(y))
