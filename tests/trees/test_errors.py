"""Bad inputs give clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from kdforge.errors import KDForgeError, ShapeMismatchError, UnknownNameError
from kdforge.models.builtin import MLP
from kdforge.trees import CubeSampler, LRHTreeDistiller, SurrogateTree, TrepanTree

from .helpers import square_representation, sum_teacher

X = np.sign(np.random.default_rng(0).normal(size=(200, 5)))


@pytest.mark.parametrize("depth", [0, -1, 1.5])
def test_depth_below_one_is_rejected(depth):
    with pytest.raises(ValueError, match="'max_depth' parameter of LRHTreeDistiller must be an int >= 1"):
        LRHTreeDistiller(sum_teacher, representation=square_representation, max_depth=depth).fit(X)
    with pytest.raises(ValueError, match="'max_depth' parameter of SurrogateTree must be an int >= 1"):
        SurrogateTree(sum_teacher, max_depth=depth).fit(X)


def test_teacher_output_of_the_wrong_shape():
    with pytest.raises(ShapeMismatchError, match=r"teacher returned shape \(\d+, 2, 2\)"):
        LRHTreeDistiller(lambda A: np.zeros((len(A), 2, 2)), representation=square_representation).fit(X)
    with pytest.raises(ShapeMismatchError, match="expected"):
        TrepanTree(lambda A: np.zeros(3)).fit(X)


def test_representation_of_the_wrong_shape():
    with pytest.raises(ShapeMismatchError, match="representation: on .* inputs it returned shape"):
        LRHTreeDistiller(sum_teacher, representation=lambda A: np.zeros((2, 3))).fit(X)


def test_unknown_layer_name_lists_close_names():
    model = MLP(input_shape=(5,), num_classes=1, hidden=(8,))
    with pytest.raises(UnknownNameError, match=r"unknown submodule of MLP 'blocks\.0\.2'\. Did you mean"):
        LRHTreeDistiller(model, layers=["blocks.0.0", "blocks.0.2"]).fit(X)
    assert issubclass(UnknownNameError, KDForgeError)


def test_callable_teacher_needs_a_representation():
    with pytest.raises(ValueError, match="Pass representation=callable"):
        LRHTreeDistiller(sum_teacher).fit(X)


def test_top_k_and_probe_mse_are_exclusive():
    with pytest.raises(ValueError, match="set exactly one of 'top_k'"):
        LRHTreeDistiller(sum_teacher, representation=square_representation, top_k=5, probe_mse=0.1).fit(X)


def test_missing_teacher_and_tiny_pool():
    with pytest.raises(ValueError, match="'teacher' is required"):
        LRHTreeDistiller().fit(X)
    with pytest.raises(ValueError, match="give at least 4"):
        LRHTreeDistiller(sum_teacher, representation=square_representation).fit(X[:3])


def test_sampler_with_the_wrong_width():
    est = LRHTreeDistiller(sum_teacher, representation=square_representation, sampler=CubeSampler(4))
    with pytest.raises(ShapeMismatchError, match="sampler: draws 4 features but X has 5"):
        est.fit(X)


def test_non_finite_teacher_scores():
    with pytest.raises(KDForgeError, match="non-finite"):
        SurrogateTree(lambda A: np.full(len(A), np.nan)).fit(X)


def test_module_teacher_that_is_not_a_module_or_callable():
    with pytest.raises(KDForgeError, match="must be a torch.nn.Module or a callable"):
        SurrogateTree(teacher=42).fit(X)
    assert isinstance(nn.Identity(), nn.Module)
