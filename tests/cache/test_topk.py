"""Top-k compression and the rebuilt distribution: exact where nothing is dropped, bounded error otherwise."""

import pytest
import torch
import torch.nn.functional as F

from kdforge.cache.topk import TopK, compress_topk, reconstruct_log_probs, reconstruct_logits, sparse_kl
from kdforge.losses.kd import soft_kl


def lm_logits(rows=32, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * 3.0  # peaked enough that the top-k hold most of the mass


@pytest.mark.parametrize("tail", ["uniform", "renormalize"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_total_variation_is_bounded_by_the_tail_mass(tail, dtype):
    logits = lm_logits()
    topk = compress_topk(logits, 64, dtype)
    p = F.softmax(logits, -1)
    q = reconstruct_log_probs(topk, tail=tail).exp()
    tail_mass = 1 - p.gather(-1, topk.indices.long()).sum(-1)
    tv = 0.5 * (p - q).abs().sum(-1)
    rounding = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5}[dtype]
    assert (tv <= tail_mass + rounding).all()
    assert torch.allclose(q.sum(-1), torch.ones(len(q)), atol=1e-5)


def test_uniform_tail_keeps_top_k_probabilities_exact():
    logits = lm_logits()
    topk = compress_topk(logits, 64, torch.float32)
    rebuilt = reconstruct_log_probs(topk, tail="uniform")
    idx = topk.indices.long()
    assert torch.allclose(rebuilt.gather(-1, idx), F.log_softmax(logits, -1).gather(-1, idx), atol=1e-5)
    # the tail's mass is the true tail mass, spread evenly
    tail_true = 1 - F.softmax(logits, -1).gather(-1, idx).sum(-1)
    tail_rebuilt = 1 - rebuilt.exp().gather(-1, idx).sum(-1)
    assert torch.allclose(tail_true, tail_rebuilt, atol=1e-5)


def test_k_at_least_vocab_is_lossless():
    logits = lm_logits(vocab=10)
    topk = compress_topk(logits, 64, torch.float32)
    assert topk.values.shape[-1] == 10
    assert torch.allclose(reconstruct_log_probs(topk, 4.0), F.log_softmax(logits / 4.0, -1), atol=1e-6)


@pytest.mark.parametrize("tail", ["uniform", "renormalize"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_sparse_kl_equals_the_dense_kl_of_the_rebuilt_teacher(tail, temperature):
    teacher = lm_logits(rows=24).reshape(4, 6, -1)  # (B, T, V) language-model shaped
    student = lm_logits(rows=24, seed=1).reshape(4, 6, -1)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(2)) > 0.3
    topk = compress_topk(teacher, 32, torch.float32)
    dense = reconstruct_logits(topk, tail)
    keep = mask.flatten()
    expected = soft_kl(student.flatten(0, 1)[keep], dense.flatten(0, 1)[keep], temperature)
    got = sparse_kl(student, topk, temperature, tail, mask=mask)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_sparse_kl_approaches_the_exact_kl_as_k_grows():
    teacher, student = lm_logits(), lm_logits(seed=1)
    exact = soft_kl(student, teacher, 2.0)
    errors = [abs(float(sparse_kl(student, compress_topk(teacher, k, torch.float32), 2.0)) - float(exact))
              for k in (16, 128, 512, 1000)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


def test_uniform_tail_needs_the_logsumexp():
    topk = compress_topk(lm_logits(), 8)
    without = TopK(topk.values, topk.indices, None, topk.vocab_size)
    with pytest.raises(ValueError, match="renormalize"):
        reconstruct_logits(without, "uniform")
    assert torch.isfinite(reconstruct_log_probs(without, tail="renormalize")).all()


def test_top64_of_a_32k_vocabulary_is_under_one_percent_of_full_logits():
    topk = compress_topk(torch.randn(2, 32000), 64, torch.float16)
    stored = sum(t.element_size() * t[0].numel() for t in (topk.values, topk.indices, topk.logsumexp))
    assert topk.indices.dtype == torch.int16
    assert stored / (32000 * 4) < 0.01
