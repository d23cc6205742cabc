"""Sentence-embedding fidelity metrics against independent computations (numpy cosine, scipy's spearmanr)."""

import numpy as np
import pytest
import torch

from kdforge.errors import ShapeMismatchError
from kdforge.metrics.embedding import (
    cosine_to_teacher,
    embedding_fidelity,
    embedding_mse,
    pairwise_cosines,
    similarity_spearman,
)

stats = pytest.importorskip("scipy.stats")


def _pair(n=40, d=8, noise=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n, d, generator=g)
    return teacher, teacher + noise * torch.randn(n, d, generator=g)


def _np_cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_cosine_mse_and_percentiles_match_numpy():
    teacher, student = _pair()
    cos = _np_cos(teacher.numpy(), student.numpy())
    np.testing.assert_allclose(cosine_to_teacher(teacher, student).numpy(), cos, rtol=1e-10)
    assert embedding_mse(teacher, student) == pytest.approx(((student - teacher).double() ** 2).mean().item())
    out = embedding_fidelity(teacher, student)
    assert out["cosine"] == pytest.approx(cos.mean()) and out["cosine_min"] == pytest.approx(cos.min())
    assert out["cosine_p05"] == pytest.approx(np.quantile(cos, 0.05))
    assert out["n"] == 40 and out["pairs"] == 40 * 39 // 2 and out["dim"] == 8


def test_spearman_matches_scipy_on_pairwise_cosines():
    teacher, student = _pair(n=30, noise=0.8, seed=3)
    t, s = teacher.numpy().astype(np.float64), student.numpy().astype(np.float64)
    iu = np.triu_indices(30, k=1)
    sim_t = (t @ t.T / np.outer(np.linalg.norm(t, axis=1), np.linalg.norm(t, axis=1)))[iu]
    sim_s = (s @ s.T / np.outer(np.linalg.norm(s, axis=1), np.linalg.norm(s, axis=1)))[iu]
    np.testing.assert_allclose(pairwise_cosines(teacher).numpy(), sim_t, atol=1e-12)
    expected = stats.spearmanr(sim_s, sim_t).statistic
    assert similarity_spearman(teacher, student) == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.99  # the noise leaves a partial, not a perfect, ordering


def test_spearman_handles_ties_like_scipy():
    teacher = torch.tensor([[1.0, 0], [0, 1], [1, 1], [-1, 0], [1, 0]])  # repeated rows: tied similarities
    student = torch.tensor([[1.0, 0.1], [0, 1], [1, 0.9], [-1, 0.2], [0.5, 0.5]])
    iu = np.triu_indices(5, k=1)
    sim = [np.nan_to_num(_np_cos(x[iu[0]], x[iu[1]])) for x in (teacher.numpy(), student.numpy())]
    assert similarity_spearman(teacher, student) == pytest.approx(stats.spearmanr(sim[1], sim[0]).statistic)


def test_identical_and_scaled_embeddings_are_perfect():
    teacher, _ = _pair()
    out = embedding_fidelity(teacher, 3.0 * teacher)  # cosine ignores scale; MSE does not
    assert out["cosine"] == pytest.approx(1.0) and out["spearman"] == pytest.approx(1.0)
    assert out["mse"] == pytest.approx(4.0 * teacher.double().pow(2).mean().item())


def test_max_rows_limits_the_pairs_and_small_sets_give_none():
    teacher, student = _pair(n=50)
    limited = similarity_spearman(teacher, student, max_rows=10)
    assert limited == pytest.approx(similarity_spearman(teacher[:10], student[:10]))
    assert embedding_fidelity(teacher, student, max_rows=10)["pairs"] == 45
    assert similarity_spearman(teacher[:2], student[:2]) is None


def test_shape_mismatch_names_the_fix():
    with pytest.raises(ShapeMismatchError, match="projector: linear"):
        cosine_to_teacher(torch.randn(4, 8), torch.randn(4, 6))
