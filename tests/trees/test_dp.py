"""TREE-DP against brute force over every decision tree on tiny cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kdforge.trees.conjunctions import all_conjunctions, class_counts, extend, membership
from kdforge.trees.dp import tree_dp
from kdforge.trees.literals import boolean_literals


def brute_force(Z, y, n_classes, max_depth, allowed=None):
    """{leaves: best correct count} over every tree of depth <= max_depth whose nodes are all in `allowed`."""
    L = Z.shape[1]

    def trees(row, depth):  # yields (leaves, correct) of every subtree rooted at conjunction `row`
        inside = membership(Z, row[None, :])[:, 0]
        yield 1, int(np.bincount(y[inside], minlength=n_classes).max())
        if depth == 0:
            return
        for i in range(L):
            if row[i] != 0:
                continue
            kids = []
            for s in (-1, 1):
                child = row.copy()
                child[i] = s
                if allowed is not None and child.tobytes() not in allowed:
                    break
                kids.append(list(trees(child, depth - 1)))
            if len(kids) < 2:
                continue
            for (la, ca), (lb, cb) in itertools.product(*kids):
                yield la + lb, ca + cb

    best = {}
    for leaves, correct in trees(np.zeros(L, dtype=np.int8), max_depth):
        best[leaves] = max(best.get(leaves, -1), correct)
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_classes", [2, 3])
def test_dp_matches_brute_force_over_all_conjunctions(seed, n_classes):
    rng = np.random.default_rng(seed)
    L, depth = 3, 3
    Z = (2 * rng.integers(0, 2, size=(40, L)) - 1).astype(np.int8)
    y = rng.integers(0, n_classes, size=40)
    brute = brute_force(Z, y, n_classes, depth)
    max_leaves = 2**depth
    result = tree_dp(all_conjunctions(L, depth), Z, y, n_classes, max_leaves)
    for budget in range(1, max_leaves + 1):
        expected = max(v for k, v in brute.items() if k <= budget)
        assert result.best_correct(budget) == expected, (seed, budget)


@pytest.mark.parametrize("seed", range(5))
def test_dp_matches_brute_force_on_a_subset_of_conjunctions(seed):
    rng = np.random.default_rng(100 + seed)
    L, depth = 4, 2
    Z = (2 * rng.integers(0, 2, size=(30, L)) - 1).astype(np.int8)
    y = rng.integers(0, 2, size=30)
    rows = all_conjunctions(L, depth)
    keep = np.r_[True, rng.random(len(rows) - 1) < 0.6]  # the root always stays
    subset = rows[keep]
    brute = brute_force(Z, y, 2, depth, allowed={r.tobytes() for r in subset})
    result = tree_dp(subset, Z, y, 2, 4)
    for budget in range(1, 5):
        assert result.best_correct(budget) == max(v for k, v in brute.items() if k <= budget)


@pytest.mark.parametrize("seed", range(4))
def test_backtracked_tree_reaches_the_table_value_within_budget(seed):
    rng = np.random.default_rng(seed)
    L = 5
    Z = (2 * rng.integers(0, 2, size=(200, L)) - 1).astype(np.int8)
    y = ((Z[:, 0] * Z[:, 1] > 0) ^ (rng.random(200) < 0.1)).astype(np.int64)
    result = tree_dp(all_conjunctions(L, 3), Z, y, 2, 8)
    for budget in range(1, 9):
        tree = result.build(budget, boolean_literals(L))
        assert tree.n_leaves <= budget
        pred = tree.predict_proba(Z.astype(float)).argmax(axis=1)
        assert int((pred == y).sum()) == result.best_correct(budget)


def test_smallest_budget_prefers_fewer_leaves():
    rng = np.random.default_rng(0)
    Z = (2 * rng.integers(0, 2, size=(400, 4)) - 1).astype(np.int8)
    y = (Z[:, 2] > 0).astype(np.int64)  # one split explains everything
    result = tree_dp(all_conjunctions(4, 3), Z, y, 2, 8)
    assert result.smallest_budget(0.0) == 2
    assert result.build(result.smallest_budget(0.0), boolean_literals(4)).n_leaves == 2


def test_extend_and_all_conjunctions_counts():
    from math import comb

    assert len(all_conjunctions(6, 3)) == sum(2**i * comb(6, i) for i in range(4))
    root = np.zeros((1, 5), dtype=np.int8)
    level1 = extend(root)
    assert len(level1) == 10 and np.all(np.abs(level1).sum(axis=1) == 1)
    assert len(extend(level1)) == 4 * comb(5, 2)  # deduplicated


def test_class_counts_matches_direct_count():
    rng = np.random.default_rng(3)
    Z = (2 * rng.integers(0, 2, size=(50, 4)) - 1).astype(np.int8)
    y = rng.integers(0, 3, size=50)
    rows = all_conjunctions(4, 2)
    counts = class_counts(Z, y, 3, rows)
    for r, row in enumerate(rows):
        inside = np.all((Z == row) | (row == 0), axis=1)
        assert np.array_equal(counts[r], np.bincount(y[inside], minlength=3))
