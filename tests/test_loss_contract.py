"""Checks every registered loss must pass, built from its registered `example=` arguments."""

import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdforge.errors import RecipeError
from kdforge.losses import LOSSES
from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.recipe import LossTerm, check_loss_term

NAMES = LOSSES.names()


def build(name):
    return LOSSES.get(name)(**LOSSES.meta(name)["example"])


def batch(b=4, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(b, k, generator=g, requires_grad=True)
    teacher = torch.randn(b, k, generator=g)  # the loop produces teacher outputs under no_grad
    labels = torch.randint(0, k, (b,), generator=g)
    return student, teacher, Targets(labels=labels, index=torch.arange(b))


def test_registry_is_not_empty():
    assert {"ce", "kd", "logit_mse"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_is_a_documented_distill_loss(name):
    cls = LOSSES.get(name)
    assert issubclass(cls, DistillLoss)
    assert cls.__doc__ and "Example" in cls.__doc__
    meta = LOSSES.meta(name)
    assert meta.get("summary") and meta.get("paper")
    assert inspect.getmodule(cls).__doc__, "the method's module names its paper"


@pytest.mark.parametrize("name", NAMES)
def test_finite_scalar_and_gradients_reach_student(name):
    s, t, targets = batch()
    loss = build(name)(Outputs(logits=s), Outputs(logits=t), targets)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_one_and_determinism(name):
    s, t, targets = batch(b=1)
    first = build(name)(Outputs(logits=s), Outputs(logits=t), targets)
    second = build(name)(Outputs(logits=s), Outputs(logits=t), targets)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES.get(n).needs_teacher])
def test_zero_when_student_equals_teacher(name):
    s, _, targets = batch()
    loss = build(name)(Outputs(logits=s), Outputs(logits=s.detach().clone()), targets)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips(name):
    first, second = build(name), build(name)
    second.load_state_dict(first.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_names_the_loss(name):
    with pytest.raises(RecipeError, match=rf"recipe.losses\[0\]: {LOSSES.get(name).__name__} has no parameter"):
        check_loss_term(LossTerm(name=name, bogus=1), where="recipe.losses[0]")


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), k=st.integers(2, 8), seed=st.integers(0, 1000), name=st.sampled_from(NAMES))
def test_any_shape_gives_a_finite_non_negative_scalar(b, k, seed, name):
    s, t, targets = batch(b, k, seed)
    loss = build(name)(Outputs(logits=s), Outputs(logits=t), targets)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() >= -1e-6
