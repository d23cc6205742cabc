"""LRHTreeDistiller: exact recovery of a planted tree when the representation contains its conjunctions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from kdforge.trees import CubeSampler, LRHTreeDistiller, random_tree, train_mlp
from kdforge.trees.conjunctions import all_conjunctions
from kdforge.trees.dp import tree_dp
from kdforge.trees.synthetic import uniform_cube

from .helpers import ConjunctionRepresentation, PlantedTeacher


def all_inputs(n):
    return np.array(list(itertools.product([-1.0, 1.0], repeat=n)))


@pytest.mark.parametrize("family", ["A", "B", "C"])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_recovery_of_a_planted_tree(family, seed):
    n, depth = 8, 3
    planted = random_tree(n, depth, family, seed)
    phi = ConjunctionRepresentation(planted.node_conjunctions(), n_noise=16, seed=seed)
    est = LRHTreeDistiller(PlantedTeacher(planted), representation=phi, sampler=CubeSampler(n), max_depth=depth,
                           top_k=8, n_probe=600, n_val=600, n_dp=600, n_fidelity=1000, size_tolerance=0.0,
                           random_state=seed).fit()
    X = all_inputs(n)
    assert np.array_equal(est.predict(X), planted.predict(X))  # the same function on the whole cube
    assert est.fidelity_ == 1.0 and est.fidelity_lower_ > 0.99
    # the smallest tree computing the same function (exhaustive DP over every conjunction, on the whole cube)
    exhaustive = tree_dp(all_conjunctions(n, depth), X.astype(np.int8), planted.predict(X), 2, 2**depth)
    assert est.tree_.n_leaves == exhaustive.smallest_budget(0.0)
    true_nodes = {r.tobytes() for r in planted.node_conjunctions()}
    probed = {r.tobytes(): m for r, m in zip(est.conjunctions_, est.probe_mse_, strict=True)}
    assert true_nodes <= set(probed)  # every node was probed ...
    assert max(probed[k] for k in true_nodes) < 1e-3  # ... and read off the representation almost exactly


def test_provable_variant_with_a_probe_mse_threshold_recovers_the_tree():
    planted = random_tree(8, 3, "B", 3)
    phi = ConjunctionRepresentation(planted.node_conjunctions(), n_noise=8)
    est = LRHTreeDistiller(PlantedTeacher(planted), representation=phi, sampler=CubeSampler(8), max_depth=3,
                           top_k=None, probe_mse=0.05, n_fidelity=1000, random_state=0).fit()
    X = all_inputs(8)
    assert np.array_equal(est.predict(X), planted.predict(X))
    assert est.n_probes_ < est.n_exhaustive_ / 2  # only extensions of represented conjunctions were probed


def test_raw_input_control_fails_on_path_parity():
    planted = random_tree(10, 3, "C", 0)
    est = LRHTreeDistiller(PlantedTeacher(planted), representation=lambda X: X, sampler=CubeSampler(10),
                           max_depth=3, top_k=4, n_fidelity=2000, random_state=0).fit()
    assert est.fidelity_ < 0.9


def test_auto_depth_stops_when_agreement_stops_improving():
    planted = random_tree(8, 2, "B", 1)
    phi = ConjunctionRepresentation(planted.node_conjunctions(), n_noise=4)
    est = LRHTreeDistiller(PlantedTeacher(planted), representation=phi, sampler=CubeSampler(8), max_depth=None,
                           n_fidelity=1000, random_state=0).fit()
    assert est.depth_ == 2 and est.fidelity_ == 1.0


def test_pool_instead_of_sampler_and_reported_sample_counts():
    planted = random_tree(8, 2, "B", 2)
    phi = ConjunctionRepresentation(planted.node_conjunctions(), n_noise=4)
    pool = uniform_cube(3000, 8, 0)
    est = LRHTreeDistiller(PlantedTeacher(planted), representation=phi, max_depth=2, random_state=0).fit(pool)
    assert sum(est.n_samples_.values()) == 3000
    assert est.n_samples_["fidelity"] == 600  # a fifth of a small pool is held out
    assert est.fidelity(uniform_cube(500, 8, 1)) == 1.0


def test_trained_mlp_teacher_with_captured_layers():
    torch.manual_seed(0)
    planted = random_tree(10, 2, "B", 0)
    X = uniform_cube(4000, 10, 0)
    model, info = train_mlp(X, planted.predict(X), hidden=(64, 64), max_epochs=60, seed=0)
    assert info["train_accuracy"] == 1.0
    est = LRHTreeDistiller(model, layers=["blocks.0.0", "blocks.0.1", "blocks.1.0", "blocks.1.1", "head"],
                           sampler=CubeSampler(10), max_depth=2, n_fidelity=4000, random_state=0).fit()
    Xt = all_inputs(10)
    assert est.fidelity_ > 0.99
    assert np.mean(est.predict(Xt) == planted.predict(Xt)) == 1.0
    default = LRHTreeDistiller(model, sampler=CubeSampler(10), max_depth=2, n_fidelity=2000, random_state=0).fit()
    assert default.fidelity_ > 0.99  # default layers: every leaf module


def test_continuous_inputs_get_threshold_literals():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))

    def teacher(A):
        return np.where(A[:, 0] > 0.5, A[:, 1] - 0.0, -(A[:, 2] + 0.4))  # a depth-2 axis-aligned tree

    def phi(A):
        return np.c_[A, A[:, 0] > 0.5, (A[:, 0] > 0.5) * (A[:, 1] > 0), (A[:, 0] <= 0.5) * (A[:, 2] <= -0.4)]

    for literals in ("quantile", "sensitivity"):
        est = LRHTreeDistiller(teacher, representation=phi, max_depth=2, literals=literals, n_thresholds=16,
                               random_state=0).fit(X)
        assert est.fidelity_ > 0.93, literals
    assert est.fidelity_ > 0.98  # sensitivity finds the teacher's own thresholds


def test_multiclass_teacher():
    def teacher(A):  # three classes from two bits: (x0 > 0) + (x0 > 0 and x1 > 0)
        cls = (A[:, 0] > 0).astype(int) + ((A[:, 0] > 0) & (A[:, 1] > 0))
        return np.eye(3)[cls]

    def phi(A):
        return np.c_[A, (A[:, 0] > 0) & (A[:, 1] > 0)]

    est = LRHTreeDistiller(teacher, representation=phi, sampler=CubeSampler(6), max_depth=2, n_fidelity=1000,
                           random_state=0).fit()
    assert list(est.classes_) == [0, 1, 2]
    assert est.fidelity_ == 1.0 and est.tree_.n_leaves == 3
    assert est.predict_proba(all_inputs(6)).shape == (64, 3)
