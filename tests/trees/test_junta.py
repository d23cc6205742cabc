"""JuntaDistiller: finds the k inputs a teacher depends on and distils the exact tree; fails clearly otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdforge.trees import CubeSampler, JuntaDistiller, NotAJuntaError
from kdforge.trees.junta import default_pairs, default_threshold
from kdforge.trees.synthetic import PlantedJunta, random_junta, random_tree
from kdforge.trees.teachers import train_mlp

from .helpers import PlantedTeacher, sum_teacher


def test_random_junta_depends_on_exactly_its_coordinates():
    junta = random_junta(20, 4, 0)
    X = CubeSampler(20)(4000, np.random.default_rng(1))
    y = junta.predict(X)
    for i in range(20):
        flipped = X.copy()
        flipped[:, i] *= -1
        assert np.any(junta.predict(flipped) != y) == (i in junta.relevant)


def test_recovers_a_planted_junta_exactly_from_queries():
    junta = random_junta(40, 4, 3)
    est = JuntaDistiller(PlantedTeacher(junta), k=4, sampler=CubeSampler(40), n_fidelity=5000,
                         random_state=0).fit()
    assert sorted(est.relevant_.tolist()) == sorted(junta.relevant.tolist())
    assert est.fidelity_ == 1.0 and est.junta_error_ == 0.0
    assert set(est.tree_.feature) - {-1} <= set(junta.relevant.tolist())
    assert est.threshold_ == default_threshold(4) == 1 / 16
    assert est.n_pairs_ == default_pairs(40, 1 / 16)
    assert est.n_queries_["influence"] == 41 * est.n_pairs_
    assert np.all(est.influence_[np.setdiff1d(np.arange(40), junta.relevant)] == 0.0)


def test_recovers_the_junta_a_trained_network_computes():
    junta = random_junta(30, 3, 1)
    X = CubeSampler(30)(8000, np.random.default_rng(0))
    model, info = train_mlp(X, junta.predict(X), (64, 64), max_epochs=60, seed=0)
    assert info["train_accuracy"] == 1.0
    torch.set_num_threads(1)
    est = JuntaDistiller(model, k=3, sampler=CubeSampler(30), n_fidelity=5000, random_state=0).fit()
    assert sorted(est.relevant_.tolist()) == sorted(junta.relevant.tolist())
    assert est.fidelity_ >= 0.99
    assert est.tree_.n_leaves <= 8


def test_fails_clearly_when_too_many_inputs_matter():
    planted = random_tree(20, 4, "B", 0)  # a depth-4 tree over up to 15 distinct variables
    n_vars = len(np.unique(planted.variables))
    assert n_vars > 3
    est = JuntaDistiller(PlantedTeacher(planted), k=3, sampler=CubeSampler(20), random_state=0)
    with pytest.raises(NotAJuntaError, match=r"not a 3-junta: \d+ inputs have influence >= 0.125.*Raise 'k'"):
        est.fit()
    assert len(est.relevant_) > 3  # the estimates stay readable after the failure


def test_fails_clearly_on_many_weak_inputs_that_pass_the_influence_test():
    """A majority over 301 inputs: each has flip influence P(|sum| = 1) ~0.09, below the threshold 0.2, so step 1
    finds no relevant input, and the empty tree disagrees with the teacher on half of the queries."""
    est = JuntaDistiller(sum_teacher, k=4, threshold=0.2, sampler=CubeSampler(301), random_state=0)
    with pytest.raises(NotAJuntaError, match=r"not a function of its 0 most influential inputs.*disagrees"):
        est.fit()


def test_continuous_inputs_use_sensitivity_thresholds_on_the_relevant_features():
    X = np.random.default_rng(0).normal(size=(3000, 8))

    def teacher(A):
        return ((A[:, 2] > 0.5) & (A[:, 5] < 0.0)).astype(float) - 0.5

    est = JuntaDistiller(teacher, k=3, n_fidelity=1000, random_state=0).fit(X)
    assert sorted(est.relevant_.tolist()) == [2, 5]
    assert est.fidelity_ >= 0.98
    assert set(est.literals_.feature.tolist()) == {2, 5}


@pytest.mark.parametrize("bad, match", [({"k": 0}, "'k'"), ({"threshold": 1.5}, "'threshold'"),
                                        ({"n_pairs": 0}, "'n_pairs'"), ({"max_error": 1.0}, "'max_error'")])
def test_bad_parameters_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        JuntaDistiller(sum_teacher, sampler=CubeSampler(5), **bad).fit()


def test_planted_junta_table_order():
    junta = PlantedJunta(3, np.array([2, 0]), np.array([0, 1, 1, 0]))  # XOR of x[2] and x[0]
    X = np.array([[1, 1, 1], [1, 1, -1], [-1, 1, 1], [-1, 1, -1]], dtype=float)
    assert junta.predict(X).tolist() == [0, 1, 1, 0]


class RecordingTeacher:
    """The continuous test teacher (x[2] > 0.5 and x[5] < 0), keeping a copy of every batch it is asked about."""

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def __call__(self, A):
        A = np.asarray(A, dtype=np.float64)
        self.calls.append(A.copy())
        return ((A[:, 2] > 0.5) & (A[:, 5] < 0.0)).astype(float) - 0.5


class CountingSampler:
    """CubeSampler that records how many rows each call drew."""

    def __init__(self, n_features: int) -> None:
        self.cube = CubeSampler(n_features)
        self.sizes: list[int] = []

    def __call__(self, n, rng):
        self.sizes.append(int(n))
        return self.cube(n, rng)


def continuous_pool(n_rows: int = 600) -> np.ndarray:
    """Normal inputs, exact in float32 (the teacher sees float32), so a value identifies its pool row."""
    return np.random.default_rng(0).normal(size=(n_rows, 8)).astype(np.float32).astype(np.float64)


def test_without_a_sampler_the_bound_is_measured_on_pool_rows_no_step_saw():
    X = continuous_pool()
    teacher = RecordingTeacher()
    est = JuntaDistiller(teacher, k=3, n_pairs=200, n_dp=400, n_fidelity=1000, random_state=0).fit(X)
    assert sorted(est.relevant_.tolist()) == [2, 5]
    held_out, fitting = teacher.calls[-1], np.concatenate(teacher.calls[:-1])
    assert np.isin(held_out, X).all()
    assert not np.isin(held_out, fitting).any()  # no value of a held-out row reached any fitting query
    assert len(np.unique(held_out, axis=0)) == len(held_out)  # distinct rows, not draws with replacement
    assert est.n_fidelity_ == len(held_out) == len(X) // 5  # at most a fifth of the pool, as the other distillers
    assert "from 120 held-out rows of the pool X, never used in fitting" in est.fidelity_statement()
    assert est.to_dict()["fidelity"]["measured_on"] == est.fidelity_rows_


def test_with_a_sampler_the_bound_says_fresh_draws():
    est = JuntaDistiller(lambda A: A[:, 0], k=2, sampler=CubeSampler(6), n_fidelity=300, random_state=0).fit()
    assert "from 300 fresh sampler draws, never used in fitting" in est.fidelity_statement()


@pytest.mark.parametrize("cube", [False, True])
def test_n_queries_counts_every_row_the_teacher_was_asked_about(cube):
    """On continuous inputs the sensitivity sweep is most of the cost: n_queries_ must include it."""
    teacher = RecordingTeacher()
    if cube:
        est = JuntaDistiller(teacher, k=3, sampler=CubeSampler(8), n_pairs=100, n_fidelity=500, random_state=0).fit()
    else:
        est = JuntaDistiller(teacher, k=3, n_pairs=200, n_dp=400, n_fidelity=1000,
                             random_state=0).fit(continuous_pool())
    asked = sum(len(call) for call in teacher.calls)
    assert sum(est.n_queries_.values()) == asked
    assert est.n_queries_["influence"] == 9 * est.n_pairs_
    assert est.n_queries_["fidelity"] == est.n_fidelity_
    assert (est.n_queries_["sweep"] == 0) == cube
    if not cube:
        assert est.n_queries_["sweep"] > asked / 2


def test_a_seeded_run_draws_exactly_the_inputs_it_uses():
    junta = random_junta(12, 2, 0)
    fits = []
    for n_pairs in (None, 1, 40):
        sampler = CountingSampler(12)
        est = JuntaDistiller(PlantedTeacher(junta), k=2, sampler=sampler, n_pairs=n_pairs, n_fidelity=200,
                             random_state=0).fit()
        assert sum(sampler.sizes) == sum(est.n_samples_.values())
        assert 0 not in sampler.sizes
        fits.append((sampler.sizes, est.tree_.n_leaves, est.relevant_.tolist()))
    sampler = CountingSampler(12)
    again = JuntaDistiller(PlantedTeacher(junta), k=2, sampler=sampler, n_fidelity=200, random_state=0).fit()
    assert (sampler.sizes, again.tree_.n_leaves, again.relevant_.tolist()) == fits[0]
    assert sorted(again.relevant_.tolist()) == sorted(junta.relevant.tolist())
