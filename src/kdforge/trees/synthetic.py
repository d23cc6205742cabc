"""Planted decision trees on the Boolean cube {-1,+1}^n: the benchmark families of PAC_DISTILLATION.md 4.2.

- family "A": the paper's generator (random variable per node, i.i.d. uniform leaf labels) [CODE];
- family "B": anti-greedy (random variable per node, sibling leaves get opposite labels) [OURS];
- family "C": path parity (leaf label = product of the literal signs on its path) [OURS].

Labels are class ids {0, 1}; class 1 is the paper's +1. A planted tree is full: depth d, 2^d leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FAMILIES = ("A", "B", "C")


@dataclass(frozen=True)
class PlantedTree:
    """A full binary tree of depth `depth` over n Boolean variables, in breadth-first (heap) order.

    Attributes:
        n_features: n.
        depth: d >= 1.
        variables: (2^d - 1,) variable queried at each internal node; node i has children 2i+1 (x = -1) and
            2i+2 (x = +1).
        leaf_labels: (2^d,) class id of each leaf, left to right.
    """

    n_features: int
    depth: int
    variables: np.ndarray
    leaf_labels: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class ids (0/1) of the rows of X (entries in {-1,+1})."""
        X = np.asarray(X)
        node = np.zeros(len(X), dtype=np.int64)
        for _ in range(self.depth):
            go_right = X[np.arange(len(X)), self.variables[node]] > 0
            node = 2 * node + 1 + go_right
        return self.leaf_labels[node - (2**self.depth - 1)]

    def node_conjunctions(self) -> np.ndarray:
        """(2^(d+1) - 1, n) ternary rows, one per node (root first): the literals on the path to it."""
        rows = np.zeros((2 ** (self.depth + 1) - 1, self.n_features), dtype=np.int8)
        for node in range(2**self.depth - 1):
            for child, sign in ((2 * node + 1, -1), (2 * node + 2, 1)):
                rows[child] = rows[node]
                rows[child, self.variables[node]] = sign
        return rows


def random_tree(n_features: int, depth: int, family: str, rng: np.random.Generator | int | None = None) -> PlantedTree:
    """Draw a planted tree of the given family (see the module docstring)."""
    if family not in FAMILIES:
        raise ValueError(f"random_tree: family must be one of {FAMILIES}; got {family!r}.")
    if depth < 1:
        raise ValueError(f"random_tree: depth must be >= 1; got {depth}.")
    if n_features < depth:
        raise ValueError(f"random_tree: a depth-{depth} tree needs n_features >= {depth}; got {n_features}.")
    rng = np.random.default_rng(rng)
    n_internal = 2**depth - 1
    variables = np.zeros(n_internal, dtype=np.int64)
    paths: list[list[tuple[int, int]]] = [[] for _ in range(2 ** (depth + 1) - 1)]  # (var, sign) per node
    for node in range(n_internal):
        used = {v for v, _ in paths[node]}
        free = [v for v in range(n_features) if v not in used]
        variables[node] = rng.choice(free)
        paths[2 * node + 1] = paths[node] + [(int(variables[node]), -1)]
        paths[2 * node + 2] = paths[node] + [(int(variables[node]), 1)]
    n_leaves = 2**depth
    if family == "A":
        labels = rng.integers(0, 2, size=n_leaves)
    elif family == "B":
        first = rng.integers(0, 2, size=n_leaves // 2)
        labels = np.stack([first, 1 - first], axis=1).reshape(-1)
    else:
        signs = [int(np.prod([s for _, s in paths[n_internal + leaf]])) for leaf in range(n_leaves)]
        labels = (np.array(signs) > 0).astype(np.int64)
    return PlantedTree(n_features, depth, variables, labels.astype(np.int64))


@dataclass(frozen=True)
class PlantedJunta:
    """A k-junta on {-1,+1}^n: the label is a truth table over the coordinates `relevant` (in that order; bit j of
    the table index is x[relevant[j]] > 0), for the junta distiller's tests and benchmark."""

    n_features: int
    relevant: np.ndarray
    table: np.ndarray  # (2^k,) class ids

    def predict(self, X: np.ndarray) -> np.ndarray:
        bits = (np.asarray(X)[:, self.relevant] > 0).astype(np.int64)
        return self.table[bits @ (1 << np.arange(len(self.relevant)))]


def random_junta(n_features: int, k: int, rng: np.random.Generator | int | None = None) -> PlantedJunta:
    """k distinct random coordinates and a random balanced truth table that depends on every one of them."""
    if not 1 <= k <= n_features:
        raise ValueError(f"random_junta: k must be in 1..n_features; got k={k}, n_features={n_features}.")
    rng = np.random.default_rng(rng)
    relevant = rng.choice(n_features, size=k, replace=False)
    index = np.arange(2**k)
    while True:
        table = rng.permutation(np.repeat([0, 1], 2 ** (k - 1))) if k > 1 else np.array([0, 1])
        # coordinate j matters iff flipping bit j changes some entry of the table
        if all(np.any(table != table[index ^ (1 << j)]) for j in range(k)):
            return PlantedJunta(n_features, relevant, table.astype(np.int64))


def uniform_cube(n_samples: int, n_features: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """(n_samples, n_features) float32 entries uniform on {-1, +1}."""
    rng = np.random.default_rng(rng)
    return (2 * rng.integers(0, 2, size=(n_samples, n_features)) - 1).astype(np.float32)


class CubeSampler:
    """A sampler of unlabelled inputs for the distillers: `sampler(n, rng) -> (n, n_features)` uniform +/-1."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features

    def __call__(self, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        return uniform_cube(n_samples, self.n_features, rng)

    def __repr__(self) -> str:
        return f"CubeSampler(n_features={self.n_features})"


class SkewedCubeSampler:
    """Inputs on {-1,+1}^n that are *not* uniform: each coordinate is +1 with probability `p_plus`, and with
    `correlation` > 0 every coordinate copies one shared +/-1 coin with that probability (pairwise correlation
    about correlation^2 on balanced coordinates). `sampler(n, rng) -> (n, n_features)` float32."""

    def __init__(self, n_features: int, p_plus: float = 0.5, correlation: float = 0.0) -> None:
        self.n_features = n_features
        self.p_plus = p_plus
        self.correlation = correlation

    def __call__(self, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        rng = np.random.default_rng(rng)
        X = np.where(rng.random((n_samples, self.n_features)) < self.p_plus, 1.0, -1.0)
        if self.correlation > 0:
            coin = np.where(rng.random((n_samples, 1)) < self.p_plus, 1.0, -1.0)
            copy = rng.random((n_samples, self.n_features)) < self.correlation
            X = np.where(copy, coin, X)
        return X.astype(np.float32)

    def __repr__(self) -> str:
        return (f"SkewedCubeSampler(n_features={self.n_features}, p_plus={self.p_plus}, "
                f"correlation={self.correlation})")
