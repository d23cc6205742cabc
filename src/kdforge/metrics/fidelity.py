"""How closely a student behaves like its teacher."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.validation import check_positive, check_same_shape


def top1_agreement(teacher_logits: Tensor, student_logits: Tensor) -> tuple[int, int]:
    """(number of rows where the two argmax predictions agree, number of rows). Shapes (N, K)."""
    check_same_shape(teacher_logits, student_logits, what="top1_agreement: teacher and student logits")
    agree = teacher_logits.argmax(dim=-1) == student_logits.argmax(dim=-1)
    return int(agree.sum()), int(agree.numel())


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval (Clopper & Pearson 1934) for a success rate.

    lower = Beta quantile (alpha/2; k, n-k+1), upper = Beta quantile (1-alpha/2; k+1, n-k), with alpha = 1 -
    confidence; the lower end is 0 when k = 0 and the upper is 1 when k = n. The one-sided lower bound at
    level 1 - alpha/2 is the lower end, so a 95% interval's lower end is a 97.5% one-sided bound.
    """
    if trials <= 0:
        raise ValueError(f"clopper_pearson needs trials > 0; got {trials}.")
    if not 0 <= successes <= trials:
        raise ValueError(f"clopper_pearson needs 0 <= successes <= trials; got {successes} of {trials}.")
    alpha = 1.0 - confidence
    from scipy.stats import beta  # on use: importing scipy.stats takes about half a second
    lower = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    upper = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lower, upper


def clopper_pearson_lower(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided exact lower bound: with probability >= `confidence` the true rate is at least this.

    lower = Beta quantile (1 - confidence; k, n-k+1), and 0 when k = 0. This is the bound behind the
    statement "with 95% confidence the student agrees with the teacher on at least X of inputs like these".
    """
    if trials <= 0:
        raise ValueError(f"clopper_pearson_lower needs trials > 0; got {trials}.")
    if not 0 <= successes <= trials:
        raise ValueError(f"clopper_pearson_lower needs 0 <= successes <= trials; got {successes} of {trials}.")
    if successes == 0:
        return 0.0
    from scipy.stats import beta  # on use: importing scipy.stats takes about half a second
    return float(beta.ppf(1.0 - confidence, successes, trials - successes + 1))


def _probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    return torch.softmax(logits.double() / temperature, dim=-1)


def _check_logits(teacher_logits: Tensor, student_logits: Tensor, what: str) -> None:
    check_same_shape(teacher_logits, student_logits, what=f"{what}: teacher and student logits")
    if teacher_logits.dim() != 2 or teacher_logits.shape[0] == 0:
        raise ShapeMismatchError(
            f"{what}: expected logits of shape (N, K) with N > 0; got {tuple(teacher_logits.shape)}. "
            "Flatten sequence logits to (B*T, K) first."
        )


def kl_to_teacher(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> float:
    """Mean over rows of KL(p_teacher || p_student) in nats, with p = softmax(logits / temperature).

    Args:
        teacher_logits: Teacher logits, shape (N, K): the reference distribution.
        student_logits: Student logits, shape (N, K).
        temperature: Softens both distributions before comparing them (1 compares them as predicted).

    Returns:
        The mean KL divergence; 0 when the student reproduces the teacher's probabilities.
    """
    _check_logits(teacher_logits, student_logits, "kl_to_teacher")
    check_positive(temperature, "temperature", "kl_to_teacher")
    log_t = torch.log_softmax(teacher_logits.double() / temperature, dim=-1)
    log_s = torch.log_softmax(student_logits.double() / temperature, dim=-1)
    return float((log_t.exp() * (log_t - log_s)).sum(dim=-1).mean())


def _js_rows(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Jensen-Shannon divergence of each row in nats: (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2."""
    p, q = _probs(teacher_logits), _probs(student_logits)
    m = (p + q) / 2

    def kl(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(a > 0, a * (torch.log(a) - torch.log(b)), torch.zeros_like(a)).sum(dim=-1)

    return ((kl(p, m) + kl(q, m)) / 2).clamp_min(0.0)


def js_divergence(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Mean over rows of the Jensen-Shannon divergence between the two predicted distributions, in nats.

    Symmetric and bounded by ln 2; 0 when the distributions are equal. Shapes (N, K).
    """
    _check_logits(teacher_logits, student_logits, "js_divergence")
    return float(_js_rows(teacher_logits, student_logits).mean())


def top_k_overlap(teacher_logits: Tensor, student_logits: Tensor, k: int) -> float:
    """Mean over rows of |top-k classes of the teacher ∩ top-k classes of the student| / k, in [0, 1]."""
    _check_logits(teacher_logits, student_logits, "top_k_overlap")
    num_classes = teacher_logits.shape[1]
    if not 1 <= k <= num_classes:
        raise ValueError(f"top_k_overlap: k must be in [1, {num_classes}] (the number of classes); got {k}.")
    top_t = teacher_logits.topk(k, dim=-1).indices  # (N, k)
    top_s = student_logits.topk(k, dim=-1).indices  # (N, k)
    shared = (top_t.unsqueeze(-1) == top_s.unsqueeze(-2)).any(dim=-1).sum(dim=-1)  # (N,)
    return float(shared.double().mean() / k)


def label_loyalty(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Label loyalty (Xu et al. 2021, https://arxiv.org/abs/2109.03228): the fraction of rows where the
    student predicts the teacher's label, i.e. top-1 agreement as a rate. Shapes (N, K)."""
    _check_logits(teacher_logits, student_logits, "label_loyalty")
    agree, n = top1_agreement(teacher_logits, student_logits)
    return agree / n


def probability_loyalty(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """Probability loyalty (Xu et al. 2021): mean over rows of 1 - sqrt(JS(p_teacher, p_student)).

    The Jensen-Shannon divergence is taken in bits (log base 2), so each row's loyalty lies in [0, 1]:
    1 when the student reproduces the teacher's probabilities, 0 when their supports are disjoint.
    """
    _check_logits(teacher_logits, student_logits, "probability_loyalty")
    js_bits = _js_rows(teacher_logits, student_logits) / math.log(2)
    return float((1.0 - js_bits.clamp(0.0, 1.0).sqrt()).mean())


def per_class_agreement(labels: Tensor, teacher_logits: Tensor, student_logits: Tensor,
                        num_classes: int | None = None) -> list[dict[str, float | int]]:
    """Accuracy of both models and their top-1 agreement, per true class.

    Args:
        labels: True class ids, shape (N,); rows labelled -100 are skipped.
        teacher_logits: Shape (N, K).
        student_logits: Shape (N, K).
        num_classes: K (default: the logits' width).

    Returns:
        One dict per class c: `class`, `n` (rows with label c), `teacher_accuracy`, `student_accuracy`,
        `agreement` (NaN-free: 0.0 with `n` = 0 when the class has no rows).
    """
    _check_logits(teacher_logits, student_logits, "per_class_agreement")
    if labels.shape != teacher_logits.shape[:1]:
        raise ShapeMismatchError(
            f"per_class_agreement: labels have shape {tuple(labels.shape)}; expected ({teacher_logits.shape[0]},)."
        )
    num_classes = num_classes or teacher_logits.shape[1]
    pred_t, pred_s = teacher_logits.argmax(dim=-1), student_logits.argmax(dim=-1)
    rows = []
    for c in range(num_classes):
        mask = labels == c
        n = int(mask.sum())
        rows.append({
            "class": c, "n": n,
            "teacher_accuracy": float((pred_t[mask] == c).double().mean()) if n else 0.0,
            "student_accuracy": float((pred_s[mask] == c).double().mean()) if n else 0.0,
            "agreement": float((pred_t[mask] == pred_s[mask]).double().mean()) if n else 0.0,
        })
    return rows


def prediction_confusion(teacher_logits: Tensor, student_logits: Tensor) -> list[list[int]]:
    """Counts C[i][j] of rows the teacher predicts as class i and the student as class j, shape (K, K).

    The diagonal holds the agreements; row i off the diagonal shows where the student sends the teacher's
    class i.
    """
    _check_logits(teacher_logits, student_logits, "prediction_confusion")
    num_classes = teacher_logits.shape[1]
    pairs = teacher_logits.argmax(dim=-1) * num_classes + student_logits.argmax(dim=-1)
    counts = torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)
    return counts.tolist()
