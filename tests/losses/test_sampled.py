"""The sparse-signal losses (kdforge.losses.sampled) against independent float64 formulas.

Sampled tokens: the estimate is unbiased, i.e. its mean over many independent draws equals the dense forward KL
(value) and the dense gradient s - p, within a tolerance derived from the draws' own spread (5 standard errors).
Top-k + tail mass: the KL between the (k+1)-bucket distributions, against a dense float64 construction.
"""

import pytest
import torch

from kdforge.cache.formats import sample_tokens
from kdforge.losses.base import Outputs, Targets
from kdforge.losses.kd import KDLoss
from kdforge.losses.sampled import Sampled, TopKTail, signal_kl
from kdforge.losses.sparse import topk_refusal
from kdforge.losses.token_kd import TokenKDLoss

V = 23


def logits(seed, shape=(2, 3, V), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def draw(teacher, samples, tau, seed):
    ids, counts, ratio, entropy = sample_tokens(teacher, samples, tau, seed, torch.arange(teacher.shape[0]))
    return Sampled(ids, counts, ratio, entropy, samples, teacher.shape[-1])


def dense_kl(student, teacher):
    p = torch.log_softmax(teacher, -1)
    return (p.exp() * (p - torch.log_softmax(student, -1))).sum(-1).mean()


def value_and_grad(loss_fn, student):
    s = student.clone().requires_grad_(True)
    value = loss_fn(s)
    (grad,) = torch.autograd.grad(value, s)
    return value.detach(), grad


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_sampled_loss_and_gradient_are_unbiased(tau):
    torch.manual_seed(0)
    teacher, student = logits(1), logits(2, scale=1.0)
    want, want_grad = value_and_grad(lambda s: dense_kl(s, teacher), student)
    loss = TokenKDLoss(chunk_size=4)
    values, grads = [], []
    for seed in range(600):
        signal = draw(teacher, 12, tau, seed)
        v, g = value_and_grad(lambda s, sig=signal: loss(Outputs(logits=s), Outputs(logits=sig), Targets()), student)
        values.append(v)
        grads.append(g)
    values, grads = torch.stack(values), torch.stack(grads)
    n = len(values)
    # tolerance: 5 standard errors of the mean, estimated from the draws themselves
    assert abs(values.mean() - want) < 5 * values.std() / n**0.5 + 1e-12
    # the gradient's tolerance from its exact variance (an empirical spread is 0 for tokens never drawn): one
    # draw x ~ q adds w(x)·(s_i - [x = i]) / N to position t's gradient, so per component
    # Var = (sum_x q_x w_x^2 (s_i - [x = i])^2 - (s_i - p_i)^2) / N, divided by the positions squared
    p, q = torch.softmax(teacher, -1), torch.softmax(teacher / tau, -1)
    s = torch.softmax(student, -1)
    second = (p**2 / q).sum(-1, keepdim=True) * s**2 - 2 * s * p**2 / q + p**2 / q
    var = (second - (s - p) ** 2) / 12 / (teacher.shape[0] * teacher.shape[1]) ** 2
    err = (grads.mean(0) - want_grad).abs()
    assert bool((err <= 5 * (var / n).sqrt() + 1e-12).all())
    # and the estimate is not trivially exact: one draw differs from the dense value
    assert values.std() > 1e-3


def test_one_draw_is_exactly_the_kl_to_the_drawn_distribution_plus_the_entropy_gap():
    teacher, student = logits(3), logits(4, scale=1.0)
    signal = draw(teacher, 12, 1.0, 0)
    p_hat = torch.zeros(*teacher.shape[:-1], V, dtype=torch.float64).scatter_add_(
        -1, signal.indices, signal.counts.double() / 12)
    ce = -(p_hat * torch.log_softmax(student, -1)).sum(-1)
    want = (ce - signal.entropy).mean()  # cross-entropy to the draws minus the teacher's exact entropy
    got = signal_kl(student, signal)
    assert float(got) == pytest.approx(float(want), rel=1e-12)
    h = -(torch.softmax(teacher, -1) * torch.log_softmax(teacher, -1)).sum(-1)
    torch.testing.assert_close(signal.entropy, h)


def bucket_reference(student, log_probs, indices, log_tail):
    """KL((p_top, m) || (s_top, 1 - sum s_top)) from dense float64 softmaxes and a boolean mask."""
    s = torch.softmax(student, -1)
    in_top = torch.zeros_like(s, dtype=torch.bool).scatter_(-1, indices, True)
    s_top = s.gather(-1, indices)
    s_tail = (s * ~in_top).sum(-1)
    p_top, m = log_probs.exp(), log_tail.exp()
    z = p_top.sum(-1) + m
    p_top, m = p_top / z.unsqueeze(-1), m / z
    return ((p_top * (p_top / s_top).log()).sum(-1) + m * (m / s_tail).log()).mean()


@pytest.mark.parametrize("k", [1, 5, V])
def test_topk_tail_matches_the_bucket_kl_value_and_gradient(k):
    teacher, student = logits(5), logits(6, scale=1.5)
    logp = torch.log_softmax(teacher, -1)
    top, idx = logp.topk(k, -1)
    tail = torch.log1p(-top.exp().sum(-1).clamp(max=1 - 1e-15)) if k < V else torch.full(top.shape[:-1], -60.0,
                                                                                          dtype=torch.float64)
    signal = TopKTail(top, idx, tail, V)
    for loss in (lambda s: TokenKDLoss(chunk_size=2)(Outputs(logits=s), Outputs(logits=signal), Targets()),
                 lambda s: KDLoss(temperature=1.0)(Outputs(logits=s), Outputs(logits=signal), Targets())):
        got, got_grad = value_and_grad(loss, student)
        reference = (lambda s: bucket_reference(s, top, idx, tail)) if k < V else (
            lambda s: dense_kl(s, teacher))  # k = V: nothing in the tail, the exact dense KL
        want, want_grad = value_and_grad(reference, student)
        assert float(got) == pytest.approx(float(want), rel=1e-10, abs=1e-12)
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-8, atol=1e-12)


def test_masked_positions_do_not_count():
    teacher, student = logits(7), logits(8)
    logp = torch.log_softmax(teacher, -1)
    top, idx = logp.topk(4, -1)
    signal = TopKTail(top, idx, torch.log1p(-top.exp().sum(-1)), V)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    got = TokenKDLoss()(Outputs(logits=student), Outputs(logits=signal), Targets(mask=mask))
    want = bucket_reference(student[mask], top[mask], idx[mask], signal.log_tail[mask])
    assert float(got) == pytest.approx(float(want), rel=1e-10)


@pytest.mark.parametrize("kind", ["sampled", "topk_tail"])
def test_what_a_sparse_signal_cannot_honour_is_refused(kind):
    teacher = logits(9)
    signal = draw(teacher, 4, 1.0, 0) if kind == "sampled" else TopKTail(*torch.log_softmax(teacher, -1).topk(3, -1),
                                                                          torch.zeros(2, 3), V)
    for term, word in ((TokenKDLoss(divergence="reverse_kl"), "forward_kl"), (TokenKDLoss(temperature=2.0),
                       "temperature"), (KDLoss(temperature=4.0), "temperature"), (TokenKDLoss(vocab_size=20),
                       "vocab_size")):
        reason = topk_refusal(term, kind)
        assert reason is not None and word in reason
        with pytest.raises(ValueError):
            term(Outputs(logits=logits(10)), Outputs(logits=signal), Targets())
    assert topk_refusal(TokenKDLoss(), kind) is None and topk_refusal(KDLoss(temperature=1.0), kind) is None
    from kdforge.losses.dkd import DKDLoss
    assert kind in topk_refusal(DKDLoss(), kind)


def test_an_empty_slot_adds_nothing_where_the_students_log_probability_is_minus_inf():
    logits = torch.tensor([[float("-inf"), 1.0, 2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    signal = Sampled(indices=torch.tensor([[2, 1, 0]]), counts=torch.tensor([[3, 1, 0]]), log_ratio=None,
                     entropy=None, samples=4, vocab_size=4)
    kl = signal.kl_rows(logits)
    log_s = torch.log_softmax(logits.detach(), -1)
    assert torch.isfinite(kl).all()
    assert kl.item() == pytest.approx(-(0.75 * log_s[0, 2] + 0.25 * log_s[0, 1]).item())
    kl.sum().backward()
    assert torch.isfinite(logits.grad[0, 1:]).all()
