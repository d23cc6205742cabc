"""TREPAN-style surrogate (Craven & Shavlik, "Extracting Tree-Structured Representations of Trained Networks",
NIPS 1995): best-first growth with synthetic teacher queries drawn under each node's constraints.

https://proceedings.neurips.cc/paper/1995/hash/45f31d16b1058d586fc3be7207b58053-Abstract.html

Per PAC_DISTILLATION.md 5.1, with axis-aligned splits only (no m-of-n tests, as `generalizedtrees` with
use_m_of_n=False):
1. The inputs (a pool X, or `n_samples` draws from a sampler) are labelled by the teacher; they also model
   the input distribution: each feature's marginal is its empirical distribution, smoothed with a Gaussian
   kernel (Silverman bandwidth) for features with more than 10 distinct values.
2. Nodes are expanded best-first by priority reach(N) * (1 - fidelity(N)): reach is the fraction of the
   inputs that reach N, fidelity the share of N's samples that agree with N's majority label.
3. A node whose real inputs number fewer than `min_samples` is topped up with synthetic inputs: features drawn
   independently from the marginals, each restricted to the node's interval on that feature (the path
   constraints), and labelled by the teacher.
4. The split maximises information gain over midpoints of observed values (at most 32 per feature).
5. Growth stops at `max_leaf_nodes` leaves (global) or when a node is pure (local), or at `max_depth`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from kdforge.trees.base import TeacherTreeEstimator, check_int
from kdforge.trees.tree import Tree

_MAX_THRESHOLDS = 32


def _entropy(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=-1, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts, dtype=float), where=total > 0)
    return -(p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=-1)


def best_split(X: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[int, float, float]:
    """(feature, threshold, information gain) of the best axis-aligned split; feature -1 when none helps."""
    onehot = np.eye(n_classes)[y]
    parent = _entropy(onehot.sum(axis=0))
    best = (-1, 0.0, 1e-12)
    for j in range(X.shape[1]):
        order = np.argsort(X[:, j], kind="stable")
        xs, cum = X[order, j], np.cumsum(onehot[order], axis=0)
        cut = np.nonzero(xs[1:] > xs[:-1])[0]  # split after position i
        if len(cut) == 0:
            continue
        if len(cut) > _MAX_THRESHOLDS:
            cut = cut[np.linspace(0, len(cut) - 1, _MAX_THRESHOLDS).astype(int)]
        left, right = cum[cut], cum[-1] - cum[cut]
        n_left = (cut + 1) / len(y)
        gain = parent - n_left * _entropy(left) - (1 - n_left) * _entropy(right)
        i = int(np.argmax(gain))
        if gain[i] > best[2]:
            best = (j, float((xs[cut[i]] + xs[cut[i] + 1]) / 2), float(gain[i]))
    return best


class _Marginals:
    """Independent per-feature marginals of the inputs, sampled inside intervals (lower, upper]."""

    def __init__(self, X: np.ndarray) -> None:
        self.X = X
        n = len(X)
        std = X.std(axis=0)
        distinct = np.array([len(np.unique(X[:, j])) for j in range(X.shape[1])])
        self.bandwidth = np.where(distinct > 10, 1.06 * std * n ** (-0.2), 0.0)

    def sample(self, n: int, lower: np.ndarray, upper: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, self.X.shape[1]))
        for j in range(self.X.shape[1]):
            col = self.X[:, j]
            inside = col[(col > lower[j]) & (col <= upper[j])]
            if len(inside) == 0:  # no observed value in the interval: uniform inside it (clipped to the data range)
                lo, hi = max(lower[j], col.min()), min(upper[j], col.max())
                out[:, j] = rng.uniform(lo, hi, size=n) if hi > lo else hi
                continue
            values = rng.choice(inside, size=n)
            if self.bandwidth[j] > 0:
                jittered = values + rng.normal(0.0, self.bandwidth[j], size=n)
                ok = (jittered > lower[j]) & (jittered <= upper[j])
                values = np.where(ok, jittered, values)  # a jitter that leaves the interval is not applied
            out[:, j] = values
        return out


class TrepanTree(TeacherTreeEstimator):
    """TREPAN-style tree: best-first growth, synthetic teacher queries under each node's constraints.

    Args:
        teacher: An `nn.Module` or a callable X -> scores.
        sampler: Callable (n, rng) -> inputs; without it the pool X (less a fidelity hold-out) is used.
        max_leaf_nodes: Global limit on leaves (TREPAN's internal-node limit plus one).
        max_depth: Optional depth limit.
        min_samples: S_min, the samples each node is split on (real inputs plus synthetic queries).
        n_samples: Inputs drawn from the sampler (when given) to label and to model the marginals.
        n_fidelity: Fresh inputs for the fidelity estimate.
        confidence: Level of the one-sided fidelity bound.
        random_state: Seed.

    Attributes:
        tree_, classes_, n_features_in_, fidelity_, fidelity_lower_, n_fidelity_: As in `LRHTreeDistiller`.
        n_samples_: {"labelled": real inputs labelled, "synthetic": synthetic queries, "fidelity": ...}.
    """

    def __init__(self, teacher: Any = None, *, sampler: Callable | None = None, max_leaf_nodes: int = 16,
                 max_depth: int | None = None, min_samples: int = 1000, n_samples: int = 6000,
                 n_fidelity: int = 20000, confidence: float = 0.95, random_state: int | None = None) -> None:
        self.teacher = teacher
        self.sampler = sampler
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples = min_samples
        self.n_samples = n_samples
        self.n_fidelity = n_fidelity
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X: Any = None, y: Any = None) -> TrepanTree:
        """Grow the tree best-first with teacher queries; y is ignored."""
        name = type(self).__name__
        self._check_teacher()
        check_int(self.max_leaf_nodes, "max_leaf_nodes", name, 1)
        if self.max_depth is not None:
            check_int(self.max_depth, "max_depth", name, 1)
        check_int(self.min_samples, "min_samples", name, 1)
        check_int(self.n_samples, "n_samples", name, 1)
        check_int(self.n_fidelity, "n_fidelity", name, 0)
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31))
        X_real, X_fid = self._fit_inputs(X, rng)
        y_real = self._teacher_labels(X_real)
        n_classes = len(self.classes_)
        marginals = _Marginals(X_real)
        n_synthetic = 0
        tree = Tree()

        def node_samples(mask: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            nonlocal n_synthetic
            Xn, yn = X_real[mask], y_real[mask]
            missing = self.min_samples - len(Xn)
            if missing > 0:
                Xs = marginals.sample(missing, lower, upper, rng)
                n_synthetic += missing
                Xn, yn = np.concatenate([Xn, Xs]), np.concatenate([yn, self._teacher_labels(Xs)])
            return Xn, yn

        d = X_real.shape[1]
        root_mask = np.ones(len(X_real), dtype=bool)
        lower0, upper0 = np.full(d, -np.inf), np.full(d, np.inf)
        Xn, yn = node_samples(root_mask, lower0, upper0)
        root = tree.add_node(np.bincount(yn, minlength=n_classes))
        heap: list[tuple[float, int, int, Any]] = []
        tiebreak = 0

        def push(node: int, mask: np.ndarray, lower, upper, depth: int, Xn, yn) -> None:
            nonlocal tiebreak
            counts = np.bincount(yn, minlength=n_classes)
            fidelity = counts.max() / max(counts.sum(), 1)
            reach = max(mask.mean(), 1.0 / (10 * len(mask)))  # never exactly 0, so synthetic-only nodes still grow
            if fidelity < 1.0 and (self.max_depth is None or depth < self.max_depth):
                heapq.heappush(heap, (-reach * (1 - fidelity), tiebreak, node, (mask, lower, upper, depth, Xn, yn)))
                tiebreak += 1

        push(root, root_mask, lower0, upper0, 0, Xn, yn)
        n_leaves = 1
        while heap and n_leaves < self.max_leaf_nodes:
            _, _, node, (mask, lower, upper, depth, Xn, yn) = heapq.heappop(heap)
            feature, threshold, _ = best_split(Xn, yn, n_classes)
            if feature < 0:
                continue
            children = []
            for side in (0, 1):
                lo, up = lower.copy(), upper.copy()
                if side == 0:
                    up[feature] = min(up[feature], threshold)
                    child_mask = mask & (X_real[:, feature] <= threshold)
                else:
                    lo[feature] = max(lo[feature], threshold)
                    child_mask = mask & (X_real[:, feature] > threshold)
                Xc, yc = node_samples(child_mask, lo, up)
                child = tree.add_node(np.bincount(yc, minlength=n_classes))
                children.append(child)
                push(child, child_mask, lo, up, depth + 1, Xc, yc)
            tree.set_split(node, feature, threshold, children[0], children[1])
            n_leaves += 1
        self.tree_ = tree
        self.n_samples_ = {"labelled": len(X_real), "synthetic": n_synthetic,
                           "fidelity": 0 if X_fid is None else len(X_fid)}
        self._finish_fit(X_fid, self._teacher_labels(X_fid) if X_fid is not None else None)
        return self
