"""DistillSpec metrics: acceptance rate and expected speed-up, checked by simulating speculative sampling."""

import pytest
import torch

from kdforge.llm.data import encode, tiny_causal_lm, train_tokenizer
from kdforge.lm.distillspec import (
    acceptance_probabilities,
    expected_speedup,
    expected_tokens_per_step,
    measure_acceptance,
)


def test_acceptance_matches_simulated_rejection_sampling():
    g = torch.Generator().manual_seed(0)
    draft, target = torch.randn(6, generator=g) * 2, torch.randn(6, generator=g) * 2
    q, p = draft.softmax(-1), target.softmax(-1)
    x = torch.multinomial(q, 200_000, replacement=True, generator=g)  # proposals from the draft
    accepted = torch.rand(200_000, generator=g) < (p[x] / q[x]).clamp(max=1)
    assert float(acceptance_probabilities(draft, target)) == pytest.approx(float(accepted.float().mean()), abs=0.005)
    assert float(acceptance_probabilities(target, target)) == pytest.approx(1.0)


def test_expected_tokens_match_a_simulation_of_iid_acceptances():
    g = torch.Generator().manual_seed(1)
    alpha, gamma, trials = 0.7, 4, 100_000
    accepted = torch.rand(trials, gamma, generator=g) < alpha
    first_reject = torch.where(accepted.all(1), gamma, (~accepted).float().argmax(1))
    tokens = first_reject + 1  # accepted proposals plus the target's own token
    assert expected_tokens_per_step(alpha, gamma) == pytest.approx(float(tokens.float().mean()), abs=0.02)
    assert expected_tokens_per_step(0.0, gamma) == 1.0 and expected_tokens_per_step(1.0, gamma) == 5.0
    assert expected_speedup(0.0, 3, 0.1) == pytest.approx(1 / 1.3)
    assert expected_speedup(1.0, 3, 0.0) == 4.0
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens_per_step(1.5, 3)


def test_measure_acceptance_on_tiny_models():
    texts = ["The quick brown fox jumps over the lazy dog.", "Return the list of names in this module."] * 2
    data = encode(texts, train_tokenizer(texts, 280), seq_len=20)
    target = tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=280, seed=1)
    out = measure_acceptance(target, target, data, ["input_ids", "attention_mask"], gammas=(2,))
    assert out["acceptance_rate"] == pytest.approx(1.0) and out["greedy_acceptance_rate"] == 1.0
    assert out["expected_tokens_per_step"][2] == pytest.approx(3.0)
    other = tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=280, seed=2)
    assert measure_acceptance(other, target, data, ["input_ids", "attention_mask"])["acceptance_rate"] < 0.99
