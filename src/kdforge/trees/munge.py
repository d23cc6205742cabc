"""MUNGE (Bucila, Caruana & Niculescu-Mizil, "Model Compression", KDD 2006): a transfer-set generator.

https://dl.acm.org/doi/10.1145/1150402.1150464

When the input distribution cannot be sampled, MUNGE makes synthetic points that stay close to the data. One
pass copies the training set T; for each example e it finds e's nearest neighbour e' (Euclidean on continuous
features scaled to [0, 1]; a categorical attribute adds 1 to the squared distance when the two differ) and,
for each attribute a with probability p:
- categorical: swap e_a and e'_a;
- continuous: sd = |e_a - e'_a| / s, then e_a <- N(e'_a, sd) and e'_a <- N(old e_a, sd).
Both e and e' are changed in the copy. `k` passes, each from the original T, give k * |T| points. Neighbours are
searched in the original T (the paper's wording; the reference Python implementation searches the copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.neighbors import NearestNeighbors


def _check(X: np.ndarray, p: float, s: float, k: int) -> None:
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"munge: X must be 2-D with at least 2 rows; got shape {X.shape}.")
    if not 0 <= p <= 1:
        raise ValueError(f"munge: the swap probability p must be in [0, 1]; got {p!r}.")
    if not s > 0:
        raise ValueError(f"munge: the local-variance parameter s must be > 0; got {s!r}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"munge: the size multiplier k must be an int >= 1; got {k!r}.")


def _neighbours(X: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    cont = ~categorical
    lo, hi = X[:, cont].min(axis=0), X[:, cont].max(axis=0)
    parts = [(X[:, cont] - lo) / np.where(hi > lo, hi - lo, 1.0)]
    for j in np.nonzero(categorical)[0]:
        values, codes = np.unique(X[:, j], return_inverse=True)
        parts.append(np.eye(len(values))[codes] / np.sqrt(2.0))  # a mismatch adds exactly 1 to the squared distance
    design = np.concatenate(parts, axis=1)
    nn = NearestNeighbors(n_neighbors=2, n_jobs=1).fit(design)
    idx = nn.kneighbors(design, return_distance=False)
    # the first neighbour is the point itself unless it has duplicates; take the first index that is not
    return np.where(idx[:, 0] == np.arange(len(X)), idx[:, 1], idx[:, 0])


def munge(X: np.ndarray, p: float = 0.5, s: float = 1.0, k: int = 10, categorical: Sequence[int] = (),
          rng: np.random.Generator | int | None = None) -> np.ndarray:
    """(k * N, D) synthetic points from the rows of X (see the module docstring)."""
    X = np.asarray(X, dtype=np.float64)
    _check(X, p, s, k)
    rng = np.random.default_rng(rng)
    is_cat = np.zeros(X.shape[1], dtype=bool)
    is_cat[list(categorical)] = True
    neighbour = _neighbours(X, is_cat)
    out = []
    for _ in range(k):
        T = X.copy()
        for e in range(len(T)):
            nb = neighbour[e]
            swap = rng.random(X.shape[1]) < p
            for a in np.nonzero(swap)[0]:
                if is_cat[a]:
                    T[e, a], T[nb, a] = T[nb, a], T[e, a]
                else:
                    sd = abs(T[e, a] - T[nb, a]) / s
                    old = T[e, a]
                    T[e, a] = rng.normal(T[nb, a], sd)
                    T[nb, a] = rng.normal(old, sd)
        out.append(T)
    return np.concatenate(out)


class MungeSampler:
    """A sampler for the distillers, `sampler(n, rng)`: n MUNGE points made from X (as many passes as needed).

    Args:
        X: The data to imitate (e.g. a tabular teacher's training inputs).
        p, s, categorical: As in `munge`.
    """

    def __init__(self, X: np.ndarray, p: float = 0.5, s: float = 1.0, categorical: Sequence[int] = ()) -> None:
        X = np.asarray(X, dtype=np.float64)
        _check(X, p, s, 1)
        self.X, self.p, self.s, self.categorical = X, p, s, tuple(categorical)

    def __call__(self, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        passes = -(-n_samples // len(self.X))
        points = munge(self.X, self.p, self.s, passes, self.categorical, rng)
        return points[rng.permutation(len(points))[:n_samples]]

    def __repr__(self) -> str:
        return f"MungeSampler(X=<{self.X.shape[0]}x{self.X.shape[1]}>, p={self.p}, s={self.s})"
