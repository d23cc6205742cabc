"""Perturbations (noise statistics, token dropout rate, masks) and the robustness summary's rates."""

import pytest
import torch

from kdforge.metrics import clopper_pearson, perturb, robustness_summary


def test_gaussian_noise_scaled_by_feature_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 3, generator=g) * torch.tensor([1.0, 5.0, 0.0])
    out = perturb({"x": x, "labels": torch.zeros(4000, dtype=torch.long)}, ["x"], noise=0.2, seed=1)
    delta = out["x"] - x
    std = x.std(dim=0, unbiased=False)
    assert delta[:, 0].std().item() == pytest.approx(0.2 * std[0].item(), rel=0.05)
    assert delta[:, 1].std().item() == pytest.approx(0.2 * std[1].item(), rel=0.05)
    assert torch.equal(delta[:, 2], torch.zeros(4000))  # a constant feature stays constant
    assert out["labels"] is not None and torch.equal(out["labels"], torch.zeros(4000, dtype=torch.long))
    again = perturb({"x": x}, ["x"], noise=0.2, seed=1)
    assert torch.equal(again["x"], out["x"])


def test_token_dropout_rate_and_mask():
    ids = torch.randint(1, 50, (200, 50))
    mask = torch.ones(200, 50, dtype=torch.long)
    mask[:, 25:] = 0
    out = perturb({"input_ids": ids, "attention_mask": mask}, ["input_ids"], token_dropout=0.3, seed=0)
    dropped = out["input_ids"] == 0
    assert dropped[:, :25].double().mean().item() == pytest.approx(0.3, abs=0.02)
    assert not dropped[:, 25:].any()  # padding is never touched
    with pytest.raises(ValueError, match="token_dropout"):
        perturb({"input_ids": ids}, ["input_ids"], token_dropout=1.5)


def test_robustness_summary_hand_counts():
    eye = torch.eye(3)
    t_clean = eye[[0, 1, 2, 0]]
    s_clean = eye[[0, 1, 2, 1]]  # agrees on 3 of 4
    t_pert = eye[[0, 1, 1, 0]]   # teacher keeps 3 of 4
    s_pert = eye[[0, 2, 1, 1]]   # agrees with perturbed teacher on 2 of 4; keeps 2 of its own 4
    out = robustness_summary(t_clean, t_pert, s_clean, s_pert)
    assert out["agreement_clean"]["rate"] == 0.75
    assert out["agreement_perturbed"]["rate"] == 0.5
    assert out["teacher_stability"]["rate"] == 0.75
    assert out["student_stability"]["rate"] == 0.5
    assert out["agreement_drop"] == pytest.approx(0.25)
    assert (out["agreement_perturbed"]["lower"], out["agreement_perturbed"]["upper"]) == clopper_pearson(2, 4)
