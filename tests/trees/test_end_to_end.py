"""End to end on the issue's target case (family B, n = 50, depth 4), one seed: run with `pytest -m slow`."""

from __future__ import annotations

import numpy as np
import pytest

from kdforge.trees import CubeSampler, LRHTreeDistiller, SurrogateTree, random_tree, train_mlp
from kdforge.trees.synthetic import uniform_cube


@pytest.mark.slow
def test_lrh_recovers_an_anti_greedy_tree_that_cart_misses():
    n, depth = 50, 4
    planted = random_tree(n, depth, "B", 0)
    X = uniform_cube(20_000, n, 0)
    teacher, info = train_mlp(X, planted.predict(X), hidden=(256, 256), max_epochs=50, seed=0)
    assert info["train_accuracy"] == 1.0
    lrh = LRHTreeDistiller(teacher, sampler=CubeSampler(n), max_depth=depth, top_k=100, random_state=0).fit()
    cart = SurrogateTree(teacher, sampler=CubeSampler(n), max_depth=depth, random_state=0).fit()
    X_test = uniform_cube(5000, n, 1)
    assert lrh.fidelity_lower_ > 0.98 and lrh.tree_.n_leaves == 16
    assert np.mean(lrh.predict(X_test) == planted.predict(X_test)) > 0.999  # the planted tree itself
    assert cart.fidelity_ < 0.85
    assert sum(lrh.timings_.values()) < 60
