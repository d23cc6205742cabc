"""span_kl and span_hybrid: span-level KL through an exact-match vocabulary mapping (and GOLD's hybrid with ULD
on the unmapped tokens), against independent float64 loops on value and gradient (central differences)."""

import math

import numpy as np
import pytest
import torch
from test_uld import fixed, pairs, softmax  # the shared alignment case (same folder)

from kdforge.errors import ShapeMismatchError
from kdforge.losses import LOSSES
from kdforge.losses.base import Outputs
from kdforge.losses.span_kl import SpanHybridLoss, SpanKLLoss

MAPPING = [2, -1, 0, 5]  # teacher id -> student id (-1: no student token is spelt the same)


def kl_part(q_full, p_full):
    """KL(p̂ || q̂) on the mapped tokens, both renormalised there."""
    p = [p_full[j] for j, m in enumerate(MAPPING) if m >= 0]
    q = [q_full[m] for m in MAPPING if m >= 0]
    p = [x / sum(p) for x in p]
    q = [x / sum(q) for x in q]
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def uld_rest(q_full, p_full):
    mapped_s = {m for m in MAPPING if m >= 0}
    q = sorted((x for i, x in enumerate(q_full) if i not in mapped_s), reverse=True)
    p = sorted((x for j, x in enumerate(p_full) if MAPPING[j] < 0), reverse=True)
    width = max(len(q), len(p))
    q, p = q + [0.0] * (width - len(q)), p + [0.0] * (width - len(p))
    return sum(abs(a - b) for a, b in zip(q, p, strict=True))


def reference(s, t, kind, temperature=1.0, weight=None):
    values = []
    w = weight if weight is not None else sum(m >= 0 for m in MAPPING) / len(MAPPING)
    for b, i, j in pairs():
        q, p = softmax(s[b, i], temperature), softmax(t[b, j], temperature)
        kl = kl_part(q, p) * temperature**2
        values.append(kl if kind == "span_kl" else w * kl + (1 - w) * uld_rest(q, p))
    return sum(values) / len(values)


def numeric_gradient(s, t, kind, **kw):
    out = np.zeros(s.shape)
    for idx in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[idx] += 1e-6
        down[idx] -= 1e-6
        out[idx] = (reference(up, t, kind, **kw) - reference(down, t, kind, **kw)) / 2e-6
    return out


@pytest.mark.parametrize(("kind", "kw"), [("span_kl", {}), ("span_kl", {"temperature": 2.0}),
                                          ("span_hybrid", {}), ("span_hybrid", {"weight": 0.3})])
def test_value_and_gradient_match_the_formula(kind, kw):
    s, t, targets = fixed()
    s = s.requires_grad_(True)
    mapping = torch.tensor(MAPPING)
    if kind == "span_kl":
        loss = SpanKLLoss(temperature=kw.get("temperature", 1.0), vocab_map=mapping)
    else:
        loss = SpanHybridLoss(mapped_weight=kw.get("weight"), vocab_map=mapping)
    value = loss(Outputs(logits=s), Outputs(logits=t), targets)
    assert value.item() == pytest.approx(reference(s.detach().numpy(), t.numpy(), kind, **kw), abs=1e-12)
    value.backward()
    np.testing.assert_allclose(s.grad.numpy(), numeric_gradient(s.detach().numpy(), t.numpy(), kind, **kw),
                               atol=1e-7)


def test_mapped_mass_is_the_teacher_share_on_shared_tokens():
    s, t, targets = fixed()
    loss = SpanKLLoss(vocab_map=torch.tensor(MAPPING))
    _, t_ends, _ = loss._aligned(Outputs(logits=s), Outputs(logits=t), targets)  # the teacher at the span ends
    expected = np.mean([sum(softmax(t[b, j], 1.0)[k] for k in (0, 2, 3)) for b, _, j in pairs()])
    assert float(loss.mapped_mass(t_ends).mean()) == pytest.approx(expected, abs=1e-12)


def test_registered_and_clear_errors():
    assert LOSSES.get("span_kl") is SpanKLLoss and LOSSES.get("span_hybrid") is SpanHybridLoss
    s, t, targets = fixed()
    with pytest.raises(ShapeMismatchError, match="no vocabulary mapping"):
        SpanKLLoss()(Outputs(logits=s), Outputs(logits=t), targets)
    with pytest.raises(ShapeMismatchError, match="vocabulary mapping covers 3 teacher"):
        SpanKLLoss(vocab_map=torch.tensor([0, 1, 2]))(Outputs(logits=s), Outputs(logits=t), targets)
    with pytest.raises(ValueError, match="share no token"):
        SpanKLLoss(vocab_map=torch.tensor([-1, -1]))
    with pytest.raises(ValueError, match="mapped_weight"):
        SpanHybridLoss(mapped_weight=1.5)
