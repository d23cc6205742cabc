"""uld: Universal Logit Distillation at aligned span ends, against an independent float64 loop (value and
gradient by central differences)."""

import numpy as np
import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.lm.align import AlignmentError
from kdforge.losses import LOSSES
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.uld import ULDLoss

# two rows; the student has 6 positions and vocabulary 7, the teacher 5 positions and vocabulary 4
S_SPAN = [[-1, 0, 1, 1, 2, -1], [-1, 0, 0, 1, -1, -1]]
T_SPAN = [[-1, 0, 0, 1, 2], [0, 1, 1, -1, -1]]
S_LABELS = [[5, 3, 1, 2, 6, -100], [2, 4, 1, 6, -100, -100]]
T_LABELS = [[1, 2, 3, 0, -100], [3, 2, 1, -100, -100]]


def fixed():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(2, 6, 7, generator=g, dtype=torch.float64) * 2
    t = torch.randn(2, 5, 4, generator=g, dtype=torch.float64) * 2
    batch = {"student_span": torch.tensor(S_SPAN), "teacher_span": torch.tensor(T_SPAN),
             "teacher_labels": torch.tensor(T_LABELS)}
    return s, t, Targets(labels=torch.tensor(S_LABELS), batch=batch)


def softmax(row, temperature):
    z = np.asarray(row, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def pairs():
    """(row, student position, teacher position) of each span's last tokens, both labels real: a plain loop."""
    out = []
    for b in range(2):
        last_s, last_t = {}, {}
        for i, k in enumerate(S_SPAN[b]):
            if k >= 0:
                last_s[k] = i
        for i, k in enumerate(T_SPAN[b]):
            if k >= 0:
                last_t[k] = i
        for k in sorted(set(last_s) & set(last_t)):
            i, j = last_s[k], last_t[k]
            if S_LABELS[b][i] != -100 and T_LABELS[b][j] != -100:
                out.append((b, i, j))
    return out


def reference(s, t, temperature=1.0):
    values = []
    for b, i, j in pairs():
        q = sorted(softmax(s[b, i], temperature), reverse=True)
        p = sorted(softmax(t[b, j], temperature), reverse=True)
        width = max(len(q), len(p))
        q, p = q + [0.0] * (width - len(q)), p + [0.0] * (width - len(p))
        values.append(sum(abs(a - c) for a, c in zip(q, p, strict=True)))
    return sum(values) / len(values)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_value_and_gradient_match_the_formula(temperature):
    s, t, targets = fixed()
    assert len(pairs()) == 4  # row 0: spans 0, 1 (span 2's teacher label is -100); row 1: spans 0, 1
    s = s.requires_grad_(True)
    value = ULDLoss(temperature)(Outputs(logits=s), Outputs(logits=t), targets)
    assert value.item() == pytest.approx(reference(s.detach().numpy(), t.numpy(), temperature), abs=1e-12)
    value.backward()
    numeric = np.zeros(s.shape)
    base = s.detach().numpy()
    for idx in np.ndindex(*s.shape):
        up, down = base.copy(), base.copy()
        up[idx] += 1e-6
        down[idx] -= 1e-6
        numeric[idx] = (reference(up, t.numpy(), temperature) - reference(down, t.numpy(), temperature)) / 2e-6
    np.testing.assert_allclose(s.grad.numpy(), numeric, atol=1e-7)


def test_identical_distributions_over_permuted_and_padded_vocabularies_give_zero():
    t = torch.tensor([[[0.3, 2.0, -1.0]]], dtype=torch.float64)
    s = torch.tensor([[[2.0, -1.0, -40.0, 0.3]]], dtype=torch.float64)  # one more (near-empty) entry
    batch = {"student_span": torch.tensor([[0]]), "teacher_span": torch.tensor([[0]])}
    assert ULDLoss()(Outputs(logits=s), Outputs(logits=t), Targets(batch=batch)).item() == pytest.approx(0, abs=1e-15)


def test_registered_and_refuses_missing_or_mismatched_alignment():
    assert LOSSES.get("uld") is ULDLoss
    s, t, targets = fixed()
    with pytest.raises(ShapeMismatchError, match="no token alignment"):
        ULDLoss()(Outputs(logits=s), Outputs(logits=t), Targets(labels=targets.labels))
    with pytest.raises(ShapeMismatchError, match="teacher_input_ids"):
        ULDLoss()(Outputs(logits=s), Outputs(logits=t[:, :4]), targets)
    bad = dict(targets.batch, teacher_span=torch.tensor([[-1, 0, 0, 1, 1], [0, 1, 1, -1, -1]]))
    with pytest.raises(AlignmentError, match="row 0 has 3 student spans but 2 teacher spans"):
        ULDLoss()(Outputs(logits=s), Outputs(logits=t), Targets(labels=targets.labels, batch=bad))
    with pytest.raises(ValueError, match="temperature"):
        ULDLoss(temperature=0)


def test_nothing_counted_gives_zero_with_a_graph():
    s, t, targets = fixed()
    s = s.requires_grad_(True)
    labels = torch.full_like(targets.labels, -100)
    value = ULDLoss()(Outputs(logits=s), Outputs(logits=t), Targets(labels=labels, batch=targets.batch))
    value.backward()
    assert value.item() == 0 and s.grad is not None
