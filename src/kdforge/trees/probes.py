"""Linear probes, all at once: one closed-form ridge solve over a shared design matrix (PAC_DISTILLATION.md 2.4).

The design matrix is the teacher's representation phi(x), standardised with statistics of the probe-train
split only (the author's code rescales train and validation batches with different constants; see 2.6), plus
an unpenalised intercept. Each unit is divided by max(std_j, 0.1 * rms_j std_j): without the floor, a ReLU
unit that fires on a handful of probe-train samples gets a huge scale-up, the probe leans on it, and on the
validation split (where it fires more often) predictions explode (we measured a validation MSE of 37 for a
+/-1 target, which cost a planted tree its recovery). The author's code scales the whole matrix by one
constant instead, which avoids this too but ranked conjunctions worse in our benchmark. For targets Y (N_train, T):

    W = (Phi^T Phi + lam I)^-1 Phi^T (Y - mean(Y)),    prediction(x) = phi_std(x) W + mean(Y)

with Phi the centred, scaled probe-train activations and lam = ridge * N_train (4.2 uses ridge = 1e-2).
Because Phi is centred, fitting the intercept separately is exact, and the projector P = (Phi^T Phi + lam I)^-1
Phi^T is computed once and reused for every batch of targets. The official code trains each probe with Adam
(101 full-batch steps, lr 0.05); the closed form is the same least-squares objective solved exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


class RidgeProbes:
    """Fit many ridge probes that share one design matrix; score them on a validation split.

    Args:
        ridge: Penalty per training sample; lam = ridge * N_train. Must be > 0 (keeps the solve well posed
            for dead or duplicated units).
    """

    def __init__(self, ridge: float = 1e-2) -> None:
        if not ridge > 0:
            raise ValueError(f"The 'ridge' parameter of RidgeProbes must be > 0. Got {ridge!r} instead.")
        self.ridge = ridge

    def fit(self, phi_train: np.ndarray) -> RidgeProbes:
        phi_train = np.asarray(phi_train, dtype=np.float64)
        self.mean_ = phi_train.mean(axis=0)
        std = phi_train.std(axis=0)
        rms = float(np.sqrt(np.mean(std**2)))
        self.scale_ = np.maximum(std, 0.1 * rms) if rms > 1e-12 else np.ones_like(std)
        phi = (phi_train - self.mean_) / self.scale_
        lam = self.ridge * len(phi)
        gram = phi.T @ phi
        gram[np.diag_indices_from(gram)] += lam
        factor = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
        self.projector_ = scipy.linalg.cho_solve(factor, phi.T, check_finite=False).astype(np.float32)  # (m, N)
        return self

    def standardize(self, phi: np.ndarray) -> np.ndarray:
        return ((np.asarray(phi, dtype=np.float64) - self.mean_) / self.scale_).astype(np.float32)

    def coef(self, y_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W (m, T), intercept (T,)) for targets (N_train, T), in the standardised feature space."""
        y_train = np.asarray(y_train, dtype=np.float32)
        return self.projector_ @ y_train, y_train.mean(axis=0)

    def predict(self, phi_std: np.ndarray, y_train: np.ndarray) -> np.ndarray:
        w, b = self.coef(y_train)
        return phi_std @ w + b

    def validation_mse(self, phi_val_std: np.ndarray, y_train: np.ndarray, y_val: np.ndarray) -> np.ndarray:
        """(T,) mean squared error of each probe on the validation split."""
        pred = self.predict(phi_val_std, y_train)
        return ((pred - np.asarray(y_val, dtype=np.float32)) ** 2).mean(axis=0).astype(np.float64)
