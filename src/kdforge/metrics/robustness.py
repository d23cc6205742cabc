"""Agreement under a small input perturbation: does the student stay with the teacher off the test set?

`perturb` adds Gaussian noise to continuous inputs (scaled by each feature's spread) and drops tokens of
integer inputs (token ids), leaving labels and masks alone. `robustness_summary` compares the four
predictions (teacher and student, clean and perturbed) with exact intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from kdforge.metrics.fidelity import clopper_pearson, top1_agreement
from kdforge.validation import check_probability


def perturb(tensors: Mapping[str, Tensor], inputs: list[str], noise: float = 0.1, token_dropout: float = 0.1,
            drop_token: int = 0, seed: int = 0) -> dict[str, Tensor]:
    """A perturbed copy of the model inputs named in `inputs`; other keys are returned unchanged.

    Args:
        tensors: Named tensors of one dataset (rows first), e.g. {"x": ..., "labels": ...}.
        inputs: The keys the models read.
        noise: Continuous inputs: add N(0, (noise * std)^2), std being each feature's standard deviation over
            the rows given (features that never vary stay as they are).
        token_dropout: Integer inputs: replace each token with `drop_token` with this probability (only where
            `attention_mask` is 1 when the dataset has one).
        drop_token: The replacement token id (a pad or [UNK]/[MASK] id).
        seed: Seed of the perturbation, so reports are reproducible.
    """
    if not noise >= 0:
        raise ValueError(f"The 'noise' parameter of perturb must be >= 0. Got {noise!r} instead.")
    check_probability(token_dropout, "token_dropout", "perturb")
    generator = torch.Generator().manual_seed(seed)
    out = dict(tensors)
    for key in inputs:
        value = tensors[key]
        if value.is_floating_point():
            std = value.double().std(dim=0, keepdim=True, unbiased=False) if len(value) > 1 else value.abs()
            eps = torch.randn(value.shape, generator=generator, dtype=torch.float64)
            out[key] = (value.double() + noise * std * eps).to(value.dtype)
        else:
            drop = torch.rand(value.shape, generator=generator) < token_dropout
            mask = tensors.get("attention_mask")
            if mask is not None and mask.shape == value.shape:
                drop &= mask.bool()
            out[key] = torch.where(drop, torch.full_like(value, drop_token), value)
    return out


def _rate(a: Tensor, b: Tensor, confidence: float) -> dict[str, float]:
    agree, n = top1_agreement(a, b)
    lower, upper = clopper_pearson(agree, n, confidence)
    return {"rate": agree / n, "lower": lower, "upper": upper}


def robustness_summary(teacher_clean: Tensor, teacher_perturbed: Tensor, student_clean: Tensor,
                       student_perturbed: Tensor, confidence: float = 0.95) -> dict[str, Any]:
    """Agreement rates, each with its exact interval, from the logits of both models on clean and perturbed inputs.

    Returns:
        `agreement_clean` (student vs teacher on clean inputs), `agreement_perturbed` (student vs teacher, both
        on perturbed inputs), `teacher_stability` and `student_stability` (each model's perturbed prediction vs
        its own clean one), and `agreement_drop` = clean - perturbed agreement.
    """
    clean = _rate(teacher_clean, student_clean, confidence)
    perturbed = _rate(teacher_perturbed, student_perturbed, confidence)
    return {
        "agreement_clean": clean,
        "agreement_perturbed": perturbed,
        "teacher_stability": _rate(teacher_clean, teacher_perturbed, confidence),
        "student_stability": _rate(student_clean, student_perturbed, confidence),
        "agreement_drop": clean["rate"] - perturbed["rate"],
    }
