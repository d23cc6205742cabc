"""DistillSpec: Zhou et al., "DistillSpec: Improving Speculative Decoding via Knowledge Distillation", ICLR 2024.

https://arxiv.org/abs/2310.08461

A draft model proposes gamma tokens; the target model verifies them in one pass. With speculative sampling
(Leviathan et al. 2023, https://arxiv.org/abs/2211.17192) a proposal x ~ q (draft) is accepted with
probability min(1, p(x) / q(x)) (p: target), so the expected acceptance at one position is

    beta = sum_x min(p(x), q(x)) = 1 - TV(p, q),

and the acceptance rate alpha is the mean of beta over positions. Under greedy decoding a proposal is accepted
when the two argmaxes agree. With acceptances treated as i.i.d. with rate alpha, one draft-then-verify
iteration yields on average (1 - alpha^(gamma+1)) / (1 - alpha) tokens, and the expected wall-time speed-up
over the target alone, for a draft that costs c target-forward-passes per token, is (Leviathan et al., Thm 3.8)

    (1 - alpha^(gamma+1)) / ((1 - alpha) (gamma c + 1)).

DistillSpec trains the draft with token-level KD (`token_kd`, any divergence; on-policy data helps) to raise
alpha; these functions measure what it is for.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.models.forward import call_model, logits_of
from kdforge.types import TensorData


def acceptance_probabilities(draft_logits: Tensor, target_logits: Tensor) -> Tensor:
    """(...,) sum_x min(p_target(x), q_draft(x)) per position, from (..., V) logits at temperature 1."""
    p = F.softmax(target_logits.double(), dim=-1)
    q = F.softmax(draft_logits.double(), dim=-1)
    return torch.minimum(p, q).sum(-1)


def expected_tokens_per_step(alpha: float, gamma: int) -> float:
    """Expected tokens one draft-then-verify iteration produces: (1 - alpha^(gamma+1)) / (1 - alpha)."""
    if not 0.0 <= alpha <= 1.0 or gamma < 1:
        raise ValueError(f"expected_tokens_per_step: alpha must be in [0, 1] and gamma >= 1; got {alpha}, {gamma}.")
    if alpha == 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Expected wall-time speed-up of speculative decoding over the target alone (Leviathan et al., Thm 3.8);
    cost_ratio c = time of one draft forward / time of one target forward."""
    if cost_ratio < 0:
        raise ValueError(f"expected_speedup: cost_ratio must be >= 0; got {cost_ratio}.")
    return expected_tokens_per_step(alpha, gamma) / (gamma * cost_ratio + 1.0)


def evaluate_draft(loss: nn.Module, student: nn.Module, teacher: nn.Module | None, test: TensorData,
                   inputs: list[str], taps: Mapping[str, str]) -> dict | None:
    """After a token-level distillation: the student as a speculative-decoding draft for the teacher, on the
    test split (the `evaluate=` hook of `token_kd` and `gkd`). None without a teacher model or a token mask."""
    if teacher is None or "mask" not in test.tensors:
        return None
    return measure_acceptance(student, teacher, test, inputs)


@torch.no_grad()
def measure_acceptance(draft: nn.Module, target: nn.Module, data: TensorData, inputs: list[str],
                       gammas: tuple[int, ...] = (1, 3, 5, 7), cost_ratio: float | None = None,
                       batch_size: int = 64) -> dict:
    """Acceptance rate (sampling and greedy) of `draft` proposals under `target` on the counted positions of
    `data` (teacher-forced: each position is scored given the true prefix), and the expected speed-up per gamma.
    `cost_ratio` defaults to the ratio of parameter counts (a rough proxy for the per-token cost)."""
    draft_mode, target_mode = draft.training, target.training
    draft.eval(), target.eval()
    beta_sum, agree, count = 0.0, 0, 0
    try:
        for start in range(0, len(data), batch_size):  # one ordered pass
            batch = data[slice(start, start + batch_size)]
            keep = batch["mask"].bool()
            q = logits_of(call_model(draft, batch, inputs))[keep]
            p = logits_of(call_model(target, batch, inputs))[keep]
            beta_sum += float(acceptance_probabilities(q, p).sum())
            agree += int((q.argmax(-1) == p.argmax(-1)).sum())
            count += int(keep.sum())
    finally:
        draft.train(draft_mode), target.train(target_mode)
    if count == 0:
        raise ValueError("measure_acceptance: no counted positions (mask is False everywhere).")
    if cost_ratio is None:
        cost_ratio = sum(p.numel() for p in draft.parameters()) / sum(p.numel() for p in target.parameters())
    alpha, greedy = beta_sum / count, agree / count
    return {"acceptance_rate": alpha, "greedy_acceptance_rate": greedy, "positions": count, "cost_ratio": cost_ratio,
            "expected_speedup": {gamma: expected_speedup(alpha, gamma, cost_ratio) for gamma in gammas},
            "expected_tokens_per_step": {gamma: expected_tokens_per_step(alpha, gamma) for gamma in gammas}}
