"""Checks every registered loss must pass, built from its registered `example=` arguments.

Every loss sees the same standard tiny outputs: logits (B, K), and one feature under the standard tap name
"feat", a (B, 8, 4, 4) map, for both models. A feature loss's `example=` names that tap (e.g.
`{"pairs": [("feat", "feat")]}`), so no method needs code of its own here. A loss whose value is not zero
when the student equals the teacher (a learned projector, a margin, a contrastive objective) says why in its
registry info as `nonzero_at_match="reason"`.
"""

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
STANDARD_TAPS = {"feat": (8, 4, 4)}  # tap name -> shape of one sample's feature


def build(name):
    return LOSSES.get(name)(**LOSSES.info(name).example)


def batch(b=4, k=5, seed=0):
    """(student Outputs, teacher Outputs, Targets, the student's leaf tensors)."""
    g = torch.Generator().manual_seed(seed)
    s_logits = torch.randn(b, k, generator=g, requires_grad=True)
    t_logits = torch.randn(b, k, generator=g)  # the loop produces teacher outputs under no_grad
    s_feats = {tap: torch.randn(b, *shape, generator=g, requires_grad=True) for tap, shape in STANDARD_TAPS.items()}
    t_feats = {tap: torch.randn(b, *shape, generator=g) for tap, shape in STANDARD_TAPS.items()}
    # a logits-shaped tap (a second head's output: rocket launching's booster)
    s_feats["head2"] = torch.randn(b, k, generator=g, requires_grad=True)
    t_feats["head2"] = torch.randn(b, k, generator=g)
    labels = torch.randint(0, k, (b,), generator=g)
    s_view = torch.randn(b, k, generator=g, requires_grad=True)  # a second dropout view, for SD-Dropout
    student = Outputs(logits=s_logits, features=s_feats, views=[s_view])
    teacher = Outputs(logits=t_logits, features=t_feats)
    return student, teacher, Targets(labels=labels, index=torch.arange(b)), [s_logits, s_view, *s_feats.values()]


def as_teacher(student):
    """The student's outputs, detached and cloned: what a teacher identical to the student would produce."""
    return Outputs(logits=student.logits.detach().clone(),
                   features={k: v.detach().clone() for k, v in student.features.items()})


def seeded_value(loss, *args):
    torch.manual_seed(0)  # losses that sample (CRD's negatives) or build projectors draw from the global RNG
    return loss(*args)


def test_registry_is_not_empty():
    assert {"ce", "kd", "logit_mse"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_is_a_documented_distill_loss(name):
    cls = LOSSES.get(name)
    assert issubclass(cls, DistillLoss)
    assert cls.__doc__ and "Example" in cls.__doc__
    info = LOSSES.info(name)
    assert info.summary and info.paper
    assert inspect.getmodule(cls).__doc__, "the method's module names its paper"


@pytest.mark.parametrize("name", NAMES)
def test_example_reads_standard_taps_only(name):
    student_taps, teacher_taps = build(name).required_taps()
    standard = {*STANDARD_TAPS, "head2"}
    assert student_taps <= standard and teacher_taps <= standard


@pytest.mark.parametrize("name", NAMES)
def test_finite_scalar_and_gradients_reach_student(name):
    student, teacher, targets, leaves = batch()
    loss = build(name)(student, teacher, targets)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves)


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_one_and_determinism(name):
    student, teacher, targets, _ = batch(b=1)
    torch.manual_seed(0)
    first = seeded_value(build(name), student, teacher, targets)
    torch.manual_seed(0)
    second = seeded_value(build(name), student, teacher, targets)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES.get(n).needs_teacher
                                  and LOSSES.info(n).nonzero_at_match is None])
def test_zero_when_student_equals_teacher(name):
    student, _, targets, _ = batch()
    loss = build(name)(student, as_teacher(student), targets)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if LOSSES.info(n).nonzero_at_match is not None])
def test_opting_out_of_zero_at_match_states_a_reason(name):
    reason = LOSSES.info(name).nonzero_at_match
    assert isinstance(reason, str) and len(reason) > 20


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_after_a_forward(name):
    """Built parts (projectors made from the first batch) and buffers (memory banks) load into a fresh loss."""
    student, teacher, targets, _ = batch()
    used, fresh = build(name), build(name)
    used(student, teacher, targets)
    fresh.load_state_dict(used.state_dict())
    used.eval(), fresh.eval()
    assert torch.equal(seeded_value(used, student, teacher, targets), seeded_value(fresh, student, teacher, targets))


@pytest.mark.parametrize("name", NAMES)
def test_every_tensor_moves_with_the_loss(name):
    """Parameters and buffers are registered: after `.double()` the loss runs on float64 inputs."""
    student, teacher, targets, _ = batch()
    loss = build(name)
    loss(student, teacher, targets)  # builds lazy parts in float32 first
    loss = loss.double()

    def as64(o):
        return Outputs(logits=o.logits.double(), features={k: v.double() for k, v in o.features.items()},
                       views=[v.double() for v in o.views])

    assert all(t.dtype == torch.float64 for t in [*loss.parameters(), *loss.buffers()] if t.is_floating_point())
    assert loss(as64(student), as64(teacher), targets).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_unknown_parameter_names_the_loss(name):
    with pytest.raises(RecipeError, match=rf"recipe.losses\[0\]: {LOSSES.get(name).__name__} has no parameter"):
        check_loss_term(LossTerm(name=name, bogus=1), where="recipe.losses[0]")


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 6), k=st.integers(2, 8), seed=st.integers(0, 1000), name=st.sampled_from(NAMES))
def test_any_shape_gives_a_finite_non_negative_scalar(b, k, seed, name):
    student, teacher, targets, _ = batch(b, k, seed)
    loss = build(name)(student, teacher, targets)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() >= -1e-6
