"""token_kd: every divergence against an independent float64 loop (and scipy where it has the divergence)."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from kdforge.cache.topk import compress_topk, sparse_kl
from kdforge.errors import ShapeMismatchError
from kdforge.losses import LOSSES
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.token_kd import TokenKDLoss

B, T, V = 2, 4, 7


def fixed():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 3
    labels = torch.tensor([[1, 2, 3, -100], [4, -100, 0, 5]])
    mask = torch.tensor([[True, True, False, True], [True, True, True, True]])
    return s, t, labels, mask


def softmax(row, temperature):
    z = np.asarray(row, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def reference(s, t, labels, mask, divergence, temperature, beta=0.5, alpha=0.1):
    """Python loop over tokens and vocabulary entries, straight from the formulas."""
    values = []
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            if not mask[b, i] or labels[b, i] == -100:
                continue
            q, p = softmax(s[b, i].tolist(), temperature), softmax(t[b, i].tolist(), temperature)
            if divergence == "forward_kl":
                d = kl(p, q)
            elif divergence == "reverse_kl":
                d = kl(q, p)
            elif divergence == "jsd":
                m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q, strict=True)]
                d = beta * kl(p, m) + (1 - beta) * kl(q, m)
            elif divergence == "tv":
                d = 0.5 * sum(abs(pi - qi) for pi, qi in zip(p, q, strict=True))
            elif divergence == "skew_kl":
                d = kl(p, [alpha * pi + (1 - alpha) * qi for pi, qi in zip(p, q, strict=True)])
            elif divergence == "skew_reverse_kl":
                d = kl(q, [alpha * qi + (1 - alpha) * pi for pi, qi in zip(p, q, strict=True)])
            values.append(d)
    return sum(values) / len(values) * temperature**2


def value(s, t, labels, mask, **kwargs):
    return TokenKDLoss(**kwargs)(Outputs(logits=s), Outputs(logits=t), Targets(labels=labels, mask=mask)).item()


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "tv", "skew_kl", "skew_reverse_kl"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_each_divergence_matches_a_loop(divergence, temperature):
    s, t, labels, mask = fixed()
    got = value(s, t, labels, mask, divergence=divergence, temperature=temperature, beta=0.3, alpha=0.2,
                chunk_size=3)
    want = reference(s.numpy(), t.numpy(), labels, mask, divergence, temperature, beta=0.3, alpha=0.2)
    assert got == pytest.approx(want, rel=1e-9)


def test_jsd_at_one_half_is_scipy_jensen_shannon_and_ends_are_the_kls():
    s, t, labels, mask = fixed()
    ones = torch.ones(B, T, dtype=torch.bool)
    got = value(s, t, None, ones, divergence="jsd", beta=0.5)
    p = torch.softmax(t, -1).reshape(-1, V).numpy()
    q = torch.softmax(s, -1).reshape(-1, V).numpy()
    want = np.mean([jensenshannon(pi, qi) ** 2 for pi, qi in zip(p, q, strict=True)])  # natural log: JS itself
    assert got == pytest.approx(want, rel=1e-9)
    forward = np.mean([rel_entr(pi, qi).sum() for pi, qi in zip(p, q, strict=True)])
    reverse = np.mean([rel_entr(qi, pi).sum() for pi, qi in zip(p, q, strict=True)])
    assert value(s, t, None, ones, divergence="jsd", beta=0.0) == pytest.approx(forward, rel=1e-9)
    assert value(s, t, None, ones, divergence="jsd", beta=1.0) == pytest.approx(reverse, rel=1e-9)
    assert value(s, t, None, ones, divergence="skew_kl", alpha=0.0) == pytest.approx(forward, rel=1e-9)


def test_forward_kl_is_kd_on_counted_positions():
    s, t, labels, mask = fixed()
    keep = mask & (labels != -100)
    kd = LOSSES.get("kd")(temperature=2.0)(Outputs(logits=s[keep]), Outputs(logits=t[keep]), Targets())
    assert value(s, t, labels, mask, temperature=2.0) == pytest.approx(kd.item(), rel=1e-9)


@pytest.mark.parametrize("divergence", ["forward_kl", "jsd", "tv"])
def test_chunk_size_changes_neither_value_nor_gradient(divergence):
    s, t, labels, mask = fixed()
    results = []
    for chunk in (1, 3, 1000):
        leaf = s.clone().requires_grad_(True)
        loss = TokenKDLoss(divergence=divergence, chunk_size=chunk, temperature=1.5)
        out = loss(Outputs(logits=leaf), Outputs(logits=t), Targets(labels=labels, mask=mask))
        out.backward()
        results.append((out.detach(), leaf.grad))
    for out, grad in results[1:]:
        assert torch.allclose(out, results[0][0], rtol=1e-12) and torch.allclose(grad, results[0][1], rtol=1e-10)
    # masked positions get no gradient
    assert results[0][1][0, 2].abs().sum() == 0 and results[0][1][1, 1].abs().sum() == 0


def uniform_tail_reference(logits, k):
    """The top-k teacher rebuilt by hand: top-k probabilities exact, the tail mass spread evenly."""
    p = softmax(logits, 1.0)
    top = np.argsort(-p)[:k]
    rest = [i for i in range(len(p)) if i not in set(top.tolist())]
    out = np.empty_like(p)
    out[top] = p[top]
    out[rest] = p[rest].sum() / len(rest)
    return out


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "tv"])
def test_top_k_teacher_matches_a_hand_rebuilt_distribution(divergence):
    s, t, labels, mask = fixed()
    t = t.float()
    topk = compress_topk(t, 3, dtype=torch.float32)
    got = TokenKDLoss(divergence=divergence, chunk_size=2)(
        Outputs(logits=s), Outputs(logits=topk), Targets(labels=labels, mask=mask)).item()
    values = []
    for b in range(B):
        for i in range(T):
            if not mask[b, i] or labels[b, i] == -100:
                continue
            p, q = uniform_tail_reference(t[b, i].tolist(), 3), softmax(s[b, i].tolist(), 1.0)
            values.append({"forward_kl": kl(p, q), "reverse_kl": kl(q, p),
                           "tv": 0.5 * np.abs(p - q).sum()}[divergence])
    assert got == pytest.approx(np.mean(values), rel=1e-5)
    if divergence == "forward_kl":  # the cache's own sparse path agrees
        keep = mask & (labels != -100)
        assert got == pytest.approx(sparse_kl(s.float(), topk, mask=keep).item(), rel=1e-5)


def test_vocabulary_mismatch_names_both_sizes_and_sequence_level_kd():
    s, t = torch.randn(1, 2, 7), torch.randn(1, 2, 9)
    with pytest.raises(ShapeMismatchError, match=r"7 entries but the teacher's 9.*vocab_size: 7.*sequence-level KD"):
        TokenKDLoss()(Outputs(logits=s), Outputs(logits=t), Targets())


def test_vocab_size_compares_only_the_real_vocabulary():
    s, t, labels, mask = fixed()
    padded_t = torch.cat([t, torch.full((B, T, 3), 5.0, dtype=t.dtype)], dim=-1)  # 3 junk rows on the teacher
    got = value(s, padded_t, labels, mask, vocab_size=V, divergence="jsd")
    assert got == pytest.approx(value(s, t, labels, mask, divergence="jsd"), rel=1e-12)
    with pytest.raises(ShapeMismatchError, match="vocab_size=8 is larger"):
        value(s, t, labels, mask, vocab_size=8)


def test_no_counted_token_gives_zero_with_a_graph():
    s = torch.randn(1, 3, 5, requires_grad=True)
    out = TokenKDLoss()(Outputs(logits=s), Outputs(logits=torch.randn(1, 3, 5)),
                        Targets(labels=torch.full((1, 3), -100)))
    out.backward()
    assert out.item() == 0.0 and s.grad is not None


def test_half_precision_is_computed_in_float32():
    s, t, labels, mask = fixed()
    got = value(s.bfloat16(), t.bfloat16(), labels, mask)
    want = value(s.bfloat16().double(), t.bfloat16().double(), labels, mask)
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"divergence": "kl"}, "divergence"), ({"beta": 1.5}, "beta"), ({"alpha": 1.0}, "alpha"),
    ({"temperature": 0.0}, "temperature"), ({"chunk_size": 0}, "chunk_size"), ({"vocab_size": 0}, "vocab_size"),
    ({"tail": "drop"}, "tail"),
])
def test_bad_arguments_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TokenKDLoss(**kwargs)


def test_gradient_follows_the_weight_and_a_second_backward_is_refused():
    s, t, labels, mask = fixed()
    grads = []
    for weight in (1.0, 0.5):
        leaf = s.clone().requires_grad_(True)
        (weight * TokenKDLoss(chunk_size=3)(Outputs(logits=leaf), Outputs(logits=t), Targets(mask=mask))).backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[1], 0.5 * grads[0], rtol=1e-12)
    leaf = s.clone().requires_grad_(True)
    out = TokenKDLoss()(Outputs(logits=leaf), Outputs(logits=t), Targets())
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        out.backward()
