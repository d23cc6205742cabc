"""Literals: the binary tests a tree may split on, and the map from inputs X to a {-1,+1} literal matrix Z.

A literal is a test (feature j, threshold t): z = +1 when x_j > t, else -1; a tree node that splits on it sends
x_j <= t left and x_j > t right (scikit-learn's convention). On the Boolean cube {-1,+1}^n there is one literal
per feature with t = 0, so Z = X and conjunctions over Z are exactly the paper's ternary vectors.

How thresholds are chosen for continuous (or categorical, integer-coded) features:
- "quantile": the midpoints between consecutive distinct values at `n_thresholds` evenly spaced quantiles of
  the pool (a feature with <= n_thresholds + 1 distinct values gets every midpoint);
- "sensitivity": where the teacher's own decision flips near real inputs. For `n_sweep` pool rows, feature j
  is swept over a quantile grid with the other features held fixed; every flip of the teacher's label between
  neighbouring grid points votes for their midpoint, with weight exp(-|q(flip) - q(row)| / 0.1), where q is the
  position in the feature's quantiles. The weight favours boundaries a small move of a real input crosses:
  unweighted votes pile up in the tails, where a single feature overrides a confident prediction but almost
  no data lies. The `n_thresholds` heaviest midpoints are kept (a feature the teacher never flips on falls
  back to one median threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Literals:
    """The chosen tests: `feature[i]`, `threshold[i]` for literal i."""

    feature: np.ndarray  # (L,) int
    threshold: np.ndarray  # (L,) float

    def __len__(self) -> int:
        return len(self.feature)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(N, L) int8 in {-1, +1}: +1 where x_feature > threshold."""
        return np.where(np.asarray(X)[:, self.feature] > self.threshold, 1, -1).astype(np.int8)

    def describe(self, i: int, positive: bool, feature_names: list[str] | None = None) -> str:
        name = feature_names[self.feature[i]] if feature_names is not None else f"x[{self.feature[i]}]"
        return f"{name} {'>' if positive else '<='} {_fmt(self.threshold[i])}"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def is_boolean_cube(X: np.ndarray) -> bool:
    """True when every entry is -1 or +1 (the paper's setting)."""
    X = np.asarray(X)
    return X.size > 0 and bool(np.all((X == 1) | (X == -1)))


def balance_tolerance(n_samples: int, n_features: int, delta: float = 1e-3) -> float:
    """Largest |mean| that n_features i.i.d. uniform +/-1 coordinates reach on n_samples rows with probability
    >= 1 - delta (Hoeffding with a union bound: sqrt(2 ln(2 n_features / delta) / n_samples)) [OURS]."""
    return float(np.sqrt(2.0 * np.log(2.0 * max(1, n_features) / delta) / max(1, n_samples)))


def is_balanced_cube(X: np.ndarray, delta: float = 1e-3) -> bool:
    """True when every entry is +/-1 *and* every coordinate's mean is within `balance_tolerance` of 0: the
    marginals of the paper's uniform cube.

    Entries in {-1,+1} alone are not enough: with P(x_j = +1) = 0.8 the conjunctions of one level cover very
    different fractions of the inputs and raw-MSE ranking favours near-empty ones (issue 20: fidelity 0.96 /
    0.99 / 0.94 with raw MSE against 0.98 / 0.98 / 0.98 with FVU on n = 40, d = 4). Correlations are not
    checked: on balanced inputs with correlated coordinates raw MSE ranked *better* in the same benchmark
    (benchmarks/results/trees_nonuniform.md)."""
    X = np.asarray(X, dtype=np.float64)
    if not is_boolean_cube(X):
        return False
    return bool(np.max(np.abs(X.mean(axis=0))) <= balance_tolerance(X.shape[0], X.shape[1], delta))


def boolean_literals(n_features: int) -> Literals:
    return Literals(np.arange(n_features), np.zeros(n_features))


def _midpoints(values: np.ndarray) -> np.ndarray:
    distinct = np.unique(values)
    return (distinct[:-1] + distinct[1:]) / 2.0


def quantile_literals(X: np.ndarray, n_thresholds: int) -> Literals:
    """Up to `n_thresholds` thresholds per feature at evenly spaced quantiles, snapped to value midpoints."""
    features, thresholds = [], []
    for j in range(X.shape[1]):
        mids = _midpoints(X[:, j])
        if len(mids) > n_thresholds:
            qs = np.quantile(X[:, j], np.linspace(0, 1, n_thresholds + 2)[1:-1])
            # snap each quantile to the nearest midpoint, so thresholds fall between observed values
            mids = np.unique(mids[np.abs(mids[None, :] - qs[:, None]).argmin(axis=1)])
        features += [j] * len(mids)
        thresholds += list(mids)
    return Literals(np.asarray(features, dtype=np.int64), np.asarray(thresholds, dtype=np.float64))


def sensitivity_literals(X: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], n_thresholds: int,
                         n_sweep: int = 200, n_grid: int = 32, rng: np.random.Generator | None = None,
                         features: np.ndarray | None = None) -> Literals:
    """Thresholds where the teacher's label flips along one-feature sweeps (see the module docstring), for
    every feature or only the given `features`."""
    rng = rng if rng is not None else np.random.default_rng(0)
    rows = X[rng.choice(len(X), size=min(n_sweep, len(X)), replace=False)]
    features_out, thresholds = [], []
    for j in (range(X.shape[1]) if features is None else [int(f) for f in features]):
        grid = np.unique(np.quantile(X[:, j], np.linspace(0, 1, n_grid)))
        if len(grid) < 2:
            continue
        sweep = np.repeat(rows, len(grid), axis=0)
        sweep[:, j] = np.tile(grid, len(rows))
        labels = predict(sweep).reshape(len(rows), len(grid))
        position = np.linspace(0.0, 1.0, len(grid))  # quantile position of each grid point
        gap_position = (position[1:] + position[:-1]) / 2.0
        row_position = np.searchsorted(grid, rows[:, j]) / (len(grid) - 1)
        weight = np.exp(-np.abs(gap_position[None, :] - row_position[:, None]) / 0.1)
        flips = ((labels[:, 1:] != labels[:, :-1]) * weight).sum(axis=0)  # weighted votes per gap
        mids = (grid[1:] + grid[:-1]) / 2.0
        order = [k for k in np.argsort(-flips, kind="stable") if flips[k] > 0][:n_thresholds]
        chosen = sorted(mids[order]) if order else [float(np.median(X[:, j]))]
        if not order and len(_midpoints(X[:, j])) == 0:
            continue
        features_out += [j] * len(chosen)
        thresholds += list(chosen)
    return Literals(np.asarray(features_out, dtype=np.int64), np.asarray(thresholds, dtype=np.float64))


def choose_literals(X: np.ndarray, method: str, n_thresholds: int,
                    predict: Callable[[np.ndarray], np.ndarray] | None = None,
                    rng: np.random.Generator | None = None) -> Literals:
    """'auto' (boolean cube -> one literal per feature, else quantiles), 'boolean', 'quantile', 'sensitivity'."""
    if method == "auto":
        method = "boolean" if is_boolean_cube(X) else "quantile"
    if method == "boolean":
        if not is_boolean_cube(X):
            raise ValueError("literals='boolean' needs inputs in {-1,+1}; use 'quantile' or 'sensitivity'.")
        return boolean_literals(X.shape[1])
    if method == "quantile":
        return quantile_literals(X, n_thresholds)
    if method == "sensitivity":
        assert predict is not None, "sensitivity literals need the teacher"
        return sensitivity_literals(X, predict, n_thresholds, rng=rng)
    raise ValueError(f"literals must be 'auto', 'boolean', 'quantile' or 'sensitivity'; got {method!r}.")
