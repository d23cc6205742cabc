"""The all-at-once ridge probes against one least-squares solve per target."""

from __future__ import annotations

import numpy as np
import pytest

from kdforge.trees.probes import RidgeProbes


@pytest.mark.parametrize("ridge", [1e-2, 1.0])
def test_ridge_probes_match_per_target_least_squares(ridge):
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(120, 7)) * np.array([1, 2, 3, 0.5, 1, 4, 1]) + 3.0
    phi[:, 6] = 1.0  # a constant column (a dead unit) must not break the solve
    Y = np.sign(rng.normal(size=(120, 5)))
    phi_val = rng.normal(size=(40, 7)) + 3.0
    probes = RidgeProbes(ridge).fit(phi)
    pred = probes.predict(probes.standardize(phi_val), Y)
    std = probes.standardize(phi)  # centred, scaled design; the intercept is unpenalised
    lam = ridge * len(phi)
    for t in range(Y.shape[1]):
        # per target: augmented least squares [X 1; sqrt(lam) I 0] [w; b] = [y; 0]
        design = np.block([[std, np.ones((len(std), 1))], [np.sqrt(lam) * np.eye(7), np.zeros((7, 1))]])
        target = np.r_[Y[:, t], np.zeros(7)]
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        expected = probes.standardize(phi_val) @ coef[:7] + coef[7]
        np.testing.assert_allclose(pred[:, t], expected, rtol=1e-4, atol=1e-4)


def test_validation_mse_is_zero_for_exactly_represented_targets():
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(500, 4))
    phi_val = rng.normal(size=(200, 4))
    w = np.array([1.0, -2.0, 0.5, 0.0])
    probes = RidgeProbes(1e-8).fit(phi)
    mse = probes.validation_mse(probes.standardize(phi_val), (phi @ w)[:, None], (phi_val @ w)[:, None])
    assert mse[0] < 1e-6


def test_rejects_non_positive_ridge():
    with pytest.raises(ValueError, match="'ridge' parameter of RidgeProbes must be > 0"):
        RidgeProbes(0.0)


def test_a_rarely_active_unit_does_not_blow_up_validation_predictions():
    rng = np.random.default_rng(2)
    phi = rng.normal(size=(400, 5))
    rare = np.zeros((400, 1))
    rare[0] = 0.01  # a weak unit that fires on one probe-train sample ...
    phi_val = rng.normal(size=(200, 5))
    rare_val = 0.01 * (rng.random((200, 1)) < 0.5)  # ... and on half the validation samples
    y = np.sign(rng.normal(size=(400, 1)))
    y[0] = 50.0  # an outlier target the rare unit alone could explain
    probes = RidgeProbes(1e-2).fit(np.c_[phi, rare])
    pred = probes.predict(probes.standardize(np.c_[phi_val, rare_val]), y)
    assert np.abs(pred).max() < 5.0
