"""An explicit axis-aligned decision tree (arrays, like scikit-learn's `tree_`), shared by every distiller.

Node k splits on `feature[k] <= threshold[k]` (left) versus `>` (right); a leaf has feature -1. `value[k]`
holds the class counts of the samples that fitted the tree (teacher labels) reaching k.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tree:
    feature: list[int] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    value: list[np.ndarray] = field(default_factory=list)

    def add_node(self, counts: np.ndarray) -> int:
        self.feature.append(-1)
        self.threshold.append(0.0)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(np.asarray(counts, dtype=np.float64))
        return len(self.feature) - 1

    def set_split(self, node: int, feature: int, threshold: float, left: int, right: int) -> None:
        self.feature[node], self.threshold[node] = int(feature), float(threshold)
        self.left[node], self.right[node] = left, right

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    @property
    def n_leaves(self) -> int:
        return sum(1 for f in self.feature if f < 0)

    @property
    def depth(self) -> int:
        def rec(k: int) -> int:
            return 0 if self.feature[k] < 0 else 1 + max(rec(self.left[k]), rec(self.right[k]))

        return rec(0) if self.feature else 0

    def apply(self, X: np.ndarray) -> np.ndarray:
        """(N,) index of the leaf each row reaches."""
        X = np.asarray(X)
        feature, threshold = np.asarray(self.feature), np.asarray(self.threshold)
        left, right = np.asarray(self.left), np.asarray(self.right)
        node = np.zeros(len(X), dtype=np.int64)
        active = feature[node] >= 0
        while active.any():
            idx = np.nonzero(active)[0]
            k = node[idx]
            go_left = X[idx, feature[k]] <= threshold[k]
            node[idx] = np.where(go_left, left[k], right[k])
            active = feature[node] >= 0
        return node

    def leaf_proba(self) -> np.ndarray:
        """(n_nodes, K) class distribution per node; an empty node inherits its parent's distribution."""
        values = np.asarray(self.value, dtype=np.float64)
        proba = np.zeros_like(values)
        stack = [(0, np.full(values.shape[1], 1.0 / values.shape[1]))]
        while stack:
            k, parent = stack.pop()
            total = values[k].sum()
            proba[k] = values[k] / total if total > 0 else parent
            if self.feature[k] >= 0:
                stack += [(self.left[k], proba[k]), (self.right[k], proba[k])]
        return proba

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.leaf_proba()[self.apply(X)]


def from_sklearn(tree_) -> Tree:
    """Convert a fitted sklearn `DecisionTreeClassifier.tree_` (counts taken from its weighted samples)."""
    out = Tree()
    for k in range(tree_.node_count):
        counts = tree_.value[k, 0] * tree_.weighted_n_node_samples[k]  # sklearn >= 1.4 stores fractions
        out.add_node(counts)
    for k in range(tree_.node_count):
        if tree_.children_left[k] >= 0:
            out.set_split(k, tree_.feature[k], tree_.threshold[k], int(tree_.children_left[k]),
                          int(tree_.children_right[k]))
    return out
