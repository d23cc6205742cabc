"""How closely a student behaves like its teacher."""

from __future__ import annotations

from scipy.stats import beta
from torch import Tensor

from kdforge.validation import check_same_shape


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
    return float(beta.ppf(1.0 - confidence, successes, trials - successes + 1))
