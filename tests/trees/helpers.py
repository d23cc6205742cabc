"""Picklable teachers and representations for the tree tests (sklearn's checks clone and pickle estimators)."""

from __future__ import annotations

import numpy as np


def sum_teacher(X):
    """One logit: class 1 when the row sum is positive; works for any number of features."""
    return np.asarray(X, dtype=np.float64).sum(axis=1)


def first_feature_teacher(X):
    """One logit: class 1 when x[0] > 0.3."""
    return np.asarray(X, dtype=np.float64)[:, 0] - 0.3


def square_representation(X):
    X = np.asarray(X, dtype=np.float64)
    return np.concatenate([X, X**2, X.sum(axis=1, keepdims=True)], axis=1)


class PlantedTeacher:
    """Scores +/-1 from a planted tree (picklable)."""

    def __init__(self, tree) -> None:
        self.tree = tree

    def __call__(self, X):
        return 2.0 * self.tree.predict(np.asarray(X)) - 1.0


class ConjunctionRepresentation:
    """phi(x) = the AND values of the given conjunctions (by construction), plus `n_noise` random features."""

    def __init__(self, rows: np.ndarray, n_noise: int = 0, seed: int = 0) -> None:
        self.rows = rows
        self.proj = np.random.default_rng(seed).normal(size=(rows.shape[1], n_noise))

    def __call__(self, X):
        X = np.asarray(X, dtype=np.float64)
        nnz = np.abs(self.rows).sum(axis=1)
        ands = np.where(X @ self.rows.T > nnz - 0.5, 1.0, -1.0)
        return np.concatenate([ands, np.tanh(X @ self.proj)], axis=1)


class NoisyConjunctionRepresentation:
    """phi(x) = the 0/1 indicators of the given conjunctions, each blurred by `noise` * tanh(<w_j, x>) (a
    deterministic nonlinearity no probe can undo), plus `n_noise` further tanh features: an approximate LRH."""

    def __init__(self, rows: np.ndarray, noise: float, n_noise: int = 0, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rows, self.noise = rows, noise
        self.blur = rng.normal(size=(rows.shape[1], len(rows)))
        self.proj = rng.normal(size=(rows.shape[1], n_noise))

    def __call__(self, X):
        X = np.asarray(X, dtype=np.float64)
        nnz = np.abs(self.rows).sum(axis=1)
        ands = (X @ self.rows.T > nnz - 0.5).astype(np.float64)
        return np.concatenate([ands + self.noise * np.tanh(X @ self.blur), np.tanh(X @ self.proj)], axis=1)
