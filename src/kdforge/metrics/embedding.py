"""Sentence-embedding fidelity: how closely a student's (N, D) embeddings reproduce the teacher's, with no labels.

Reimers & Gurevych (2020) train the student to regress onto the teacher's embedding, so the direct measure is
the cosine between the two embeddings of each sentence; what a retrieval or STS user relies on is the geometry
between sentences, measured here by the Spearman correlation of all pairwise cosine similarities (student vs
teacher), as STS benchmarks score similarity rankings. Reference (teacher) first, then the student.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.metrics.explain import rank_correlation

MAX_PAIR_ROWS = 2000  # 2000 rows = 2.0 M pairs; the pair count grows with the square of the rows


def _check(teacher_emb: Tensor, student_emb: Tensor, what: str) -> None:
    if teacher_emb.dim() != 2 or teacher_emb.shape != student_emb.shape:
        raise ShapeMismatchError(
            f"{what}: needs (N, D) teacher and student embeddings of the same shape; got "
            f"{tuple(teacher_emb.shape)} and {tuple(student_emb.shape)}. Give the student the teacher's width "
            "(or train embed_mse with projector: linear and evaluate the projected embedding)."
        )


def cosine_to_teacher(teacher_emb: Tensor, student_emb: Tensor) -> Tensor:
    """(N,) cosine similarity of each row's student embedding to its teacher embedding (higher is better, max 1)."""
    _check(teacher_emb, student_emb, "cosine_to_teacher")
    return F.cosine_similarity(student_emb.double(), teacher_emb.double(), dim=-1)


def embedding_mse(teacher_emb: Tensor, student_emb: Tensor) -> float:
    """Mean squared error over rows and dimensions, the quantity `embed_mse` trains on (lower is better)."""
    _check(teacher_emb, student_emb, "embedding_mse")
    return float((student_emb.double() - teacher_emb.double()).pow(2).mean())


def pairwise_cosines(emb: Tensor) -> Tensor:
    """(N, D) -> (N(N-1)/2,) cosine similarity of every unordered pair of rows i < j, in row-major order."""
    unit = F.normalize(emb.double(), dim=-1)
    i, j = torch.triu_indices(len(unit), len(unit), offset=1)
    return (unit @ unit.T)[i, j]


def similarity_spearman(teacher_emb: Tensor, student_emb: Tensor, max_rows: int = MAX_PAIR_ROWS) -> float | None:
    """Spearman's rho between the teacher's and the student's pairwise cosine similarities (ties: average ranks).

    1 means the student orders every pair of sentences by similarity exactly as the teacher does. Only the
    first `max_rows` rows are paired (the count of pairs grows quadratically); None when fewer than 3 rows or a
    constant similarity make rho undefined.
    """
    _check(teacher_emb, student_emb, "similarity_spearman")
    if max_rows < 3:
        raise ValueError(f"similarity_spearman: max_rows must be >= 3; got {max_rows}.")
    teacher_emb, student_emb = teacher_emb[:max_rows], student_emb[:max_rows]
    if len(teacher_emb) < 3:
        return None
    rho = float(rank_correlation(pairwise_cosines(teacher_emb)[None], pairwise_cosines(student_emb)[None])[0])
    return None if rho != rho else rho  # NaN (a constant similarity) -> None, which JSON can hold


def embedding_fidelity(teacher_emb: Tensor, student_emb: Tensor, max_rows: int = MAX_PAIR_ROWS) -> dict[str, Any]:
    """The label-free test metrics of a student encoder: cosine to the teacher (mean, std, min, 5th percentile),
    MSE, and the Spearman correlation of pairwise similarities, with the counts they rest on."""
    cos = cosine_to_teacher(teacher_emb, student_emb)
    n_pair_rows = min(len(cos), max_rows)
    return {
        "cosine": float(cos.mean()),
        "cosine_std": float(cos.std()) if len(cos) > 1 else 0.0,
        "cosine_min": float(cos.min()),
        "cosine_p05": float(torch.quantile(cos, 0.05)),
        "mse": embedding_mse(teacher_emb, student_emb),
        "spearman": similarity_spearman(teacher_emb, student_emb, max_rows),
        "n": len(cos),
        "pairs": n_pair_rows * (n_pair_rows - 1) // 2,
        "dim": int(teacher_emb.shape[1]),
    }


__all__ = ["MAX_PAIR_ROWS", "cosine_to_teacher", "embedding_fidelity", "embedding_mse", "pairwise_cosines",
           "similarity_spearman"]
