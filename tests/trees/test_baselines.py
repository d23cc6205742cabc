"""SurrogateTree, TrepanTree, SoftDecisionTree and MUNGE on small known teachers."""

from __future__ import annotations

import numpy as np
import pytest

from kdforge.trees import MungeSampler, SoftDecisionTree, SurrogateTree, TrepanTree, munge
from kdforge.trees.trepan import best_split

from .helpers import first_feature_teacher

X = np.random.default_rng(0).normal(size=(1500, 4))


@pytest.mark.parametrize("cls,kwargs", [(SurrogateTree, {"max_depth": 2}), (TrepanTree, {"max_leaf_nodes": 4}),
                                        (SoftDecisionTree, {"depth": 2, "epochs": 30})])
def test_baselines_mimic_a_threshold_teacher(cls, kwargs):
    est = cls(first_feature_teacher, random_state=0, **kwargs).fit(X)
    assert est.fidelity_ > 0.95
    assert est.n_fidelity_ == 300  # a fifth of the pool is held out
    assert est.fidelity(X) > 0.95


def test_surrogate_tree_recovers_the_threshold():
    est = SurrogateTree(first_feature_teacher, max_depth=1, random_state=0).fit(X)
    assert est.tree_.feature[0] == 0 and abs(est.tree_.threshold[0] - 0.3) < 0.05
    assert est.fidelity_ > 0.99


def test_trepan_queries_the_teacher_under_node_constraints():
    est = TrepanTree(first_feature_teacher, max_leaf_nodes=3, min_samples=2000, random_state=0).fit(X[:200])
    assert est.n_samples_["synthetic"] > 0  # 160 real inputs < S_min: the rest are synthetic queries
    assert est.fidelity(X) > 0.97


def test_best_split_prefers_the_informative_feature():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(400, 3))
    y = (A[:, 2] > -0.5).astype(int)
    feature, threshold, gain = best_split(A, y, 2)
    assert feature == 2 and abs(threshold + 0.5) < 0.1 and gain > 0.5


def test_munge_shapes_and_degenerate_p():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(50, 3))
    out = munge(A, p=0.0, k=3, rng=0)
    assert out.shape == (150, 3) and np.array_equal(out[:50], A)  # p = 0 changes nothing
    moved = munge(A, p=1.0, s=1.0, k=1, rng=0)
    assert not np.allclose(moved, A)


def test_munge_swaps_categorical_values_only_among_observed_values():
    rng = np.random.default_rng(0)
    A = np.c_[rng.normal(size=40), rng.integers(0, 3, size=40)]
    out = munge(A, p=0.7, k=4, categorical=[1], rng=1)
    assert set(np.unique(out[:, 1])) <= {0.0, 1.0, 2.0}


def test_munge_sampler_returns_n_rows_and_rejects_bad_arguments():
    sampler = MungeSampler(np.random.default_rng(0).normal(size=(30, 2)))
    assert sampler(100, np.random.default_rng(0)).shape == (100, 2)
    with pytest.raises(ValueError, match="swap probability p must be in"):
        munge(np.zeros((5, 2)), p=1.5)
    with pytest.raises(ValueError, match="at least 2 rows"):
        MungeSampler(np.zeros((1, 2)))
