"""Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.

https://arxiv.org/abs/1910.10699 (authors' code: https://github.com/HobbitLong/RepDistiller, `crd/`)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import feature, flat
from kdforge.models.adapters import Projector
from kdforge.registry import LOSSES
from kdforge.validation import check_positive, check_probability


def nce_loss(log_scores: Tensor, num_samples: int) -> Tensor:
    """The NCE objective of the authors' `ContrastLoss` (Eq. 10 of the paper with a uniform noise distribution).

    log_scores: (B, 1 + K), log of exp(<v, w>/T) / Z; column 0 is the positive, the rest K negatives.
    With P_n = 1/N and h(x) = P(x) / (P(x) + K·P_n):
        loss = -(1/B) Σ_b [ log h(pos_b) + Σ_k log(1 - h(neg_bk)) ]
    computed with logaddexp, which the authors write with an additive eps instead.
    """
    batch, k = log_scores.shape[0], log_scores.shape[1] - 1
    log_noise = torch.full_like(log_scores, math.log(k / num_samples))  # log(K · P_n)
    log_denominator = torch.logaddexp(log_scores, log_noise)  # log (P + K·P_n)
    log_h = log_scores - log_denominator  # log P / (P + K·P_n)
    log_one_minus_h = log_noise - log_denominator  # log K·P_n / (P + K·P_n)
    return -(log_h[:, 0].sum() + log_one_minus_h[:, 1:].sum()) / batch


class _ContrastHead(nn.Module):
    """Per tap pair: embedding heads of both models and the two memory banks (one row per training sample)."""

    def __init__(self, num_samples: int, embed_dim: int) -> None:
        super().__init__()
        self.embed_student = Projector("linear", out_features=embed_dim)
        self.embed_teacher = Projector("linear", out_features=embed_dim)
        # As in the authors' ContrastMemory: uniform in [-s, s] with s = 1 / sqrt(dim / 3).
        bound = 1.0 / math.sqrt(embed_dim / 3)
        self.register_buffer("memory_student", torch.rand(num_samples, embed_dim).mul_(2 * bound).sub_(bound))
        self.register_buffer("memory_teacher", torch.rand(num_samples, embed_dim).mul_(2 * bound).sub_(bound))
        # log Z of each side, fixed from the first batch as in the authors' code (NaN: not yet estimated).
        self.register_buffer("log_z", torch.full((2,), float("nan")))


@LOSSES.register(
    "crd",
    example={"pairs": [("feat", "feat")], "num_samples": 16, "num_negatives": 8, "embed_dim": 8},
    paper="Tian et al. 2019, https://arxiv.org/abs/1910.10699",
    summary="contrastive representation distillation: NCE against a memory bank of negatives; needs sample ids",
    nonzero_at_match="a contrastive loss: positives are never scored with certainty against the noise, "
                     "so identical features still give a positive value",
)
class CRDLoss(PairedFeatureLoss):
    """Contrastive representation distillation: the student embedding of a sample must pick out the
    teacher embedding of the same sample among K others from a memory bank, and vice versa.

    Embeddings v = normalize(W x) (a learned linear head per model). Each model's bank holds one slowly
    updated embedding per training sample id (`Targets.index`). With the K negatives drawn uniformly from
    the bank, the student anchor is scored against the teacher bank and the teacher anchor against the
    student bank: P(j | v) = exp(<v, m_j> / T) / Z, with Z = N · mean of exp(...) on the first batch and then
    held fixed. loss = NCE(student anchor) + NCE(teacher anchor), the NCE objective (Eq. 10) with uniform
    noise P_n = 1/N: -log h(positive) - Σ log(1 - h(negative)), h(x) = P(x) / (P(x) + K/N). After each
    training step the banks move towards the new embeddings: m_i <- normalize(momentum · m_i + (1 - momentum)
    · v_i). Averaged over tap pairs, each with its own heads and banks.

    This is the NCE variant of the authors' `CRDLoss`/`ContrastMemory`, not the InfoNCE (softmax) variant.
    Differences: their CIFAR loader draws negatives from other classes; here they are drawn uniformly from the
    whole bank (their `ContrastMemory` default, needing no labels). Negatives come from the global torch RNG,
    whose state checkpoints save, so a resumed run draws the same ones. The banks change only in training
    mode: preflight and evaluation leave them alone.

    Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.
    https://arxiv.org/abs/1910.10699

    Args:
        pairs: (student_tap, teacher_tap) names (the paper uses the penultimate features), or a layer-map spec.
        num_samples: Rows of each memory bank, N: more than the largest sample id in the training data
            (e.g. 1797 for sklearn:digits, whose ids are positions in the full dataset).
        embed_dim: Width of the embeddings and bank rows (the paper: 128).
        num_negatives: Negatives per anchor, 1 <= K < N (the paper: 16384 on CIFAR-100).
        temperature: T > 0 in exp(<v, m>/T) (the paper: 0.07).
        momentum: Bank update momentum in [0, 1] (the paper: 0.5).

    Shapes: per pair, student (B, ...) and teacher (B, ...), flattened to vectors; `Targets.index` (B,) ids.

    Example:
        >>> import torch
        >>> loss = CRDLoss(pairs=[("s", "t")], num_samples=100, num_negatives=16)
        >>> s, t = Outputs(features={"s": torch.randn(4, 8)}), Outputs(features={"t": torch.randn(4, 12)})
        >>> loss(s, t, Targets(index=torch.tensor([0, 5, 7, 9]))).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict, num_samples: int, embed_dim: int = 128,
                 num_negatives: int = 4096, temperature: float = 0.07, momentum: float = 0.5) -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "CRDLoss")
        for value, name, low in ((num_samples, "num_samples", 2), (embed_dim, "embed_dim", 1),
                                 (num_negatives, "num_negatives", 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"The {name!r} parameter of CRDLoss must be an integer >= {low}. Got {value!r}.")
        if num_negatives >= num_samples:
            raise ValueError(f"CRDLoss: num_negatives ({num_negatives}) must be smaller than num_samples "
                             f"({num_samples}), the size of the memory bank it draws them from.")
        self.num_samples, self.embed_dim, self.num_negatives = num_samples, embed_dim, num_negatives
        self.temperature = check_positive(temperature, "temperature", "CRDLoss")
        self.momentum = check_probability(momentum, "momentum", "CRDLoss")
        self.heads = nn.ModuleList([_ContrastHead(num_samples, embed_dim) for _ in self.pairs])

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        if targets.index is None:
            raise ValueError("CRDLoss needs sample ids (Targets.index, the batch's 'index') to address its memory "
                             "bank. kdforge's datasets carry them; pass index=... when calling the loss directly.")
        index = targets.index.flatten().long()  # (B,)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ValueError(f"CRDLoss: sample id {int(index.max())} is outside the memory bank of {self.num_samples} "
                             "rows. Set num_samples to at least the dataset size.")
        terms = []
        for i, (s_name, t_name) in self.active_pairs():
            head = self.heads[i]
            s = flat(feature(student, s_name, "student", "crd"))  # (B, D_s)
            t = flat(feature(teacher, t_name, "teacher", "crd")).detach()  # (B, D_t)
            v_s = F.normalize(head.embed_student(s), dim=1)  # (B, E)
            v_t = F.normalize(head.embed_teacher(t), dim=1)  # (B, E)
            negatives = torch.randint(self.num_samples, (index.shape[0], self.num_negatives), device=index.device)
            rows = torch.cat([index.unsqueeze(1), negatives], dim=1)  # (B, 1+K): the positive first
            # Student anchor against the teacher bank, teacher anchor against the student bank.
            raw_s = torch.bmm(head.memory_teacher[rows], v_s.unsqueeze(2)).squeeze(2) / self.temperature  # (B, 1+K)
            raw_t = torch.bmm(head.memory_student[rows], v_t.unsqueeze(2)).squeeze(2) / self.temperature
            with torch.no_grad():  # Z = N · mean exp(score) on the first batch, then fixed (no GPU sync needed)
                estimate = torch.stack([raw_s.detach().flatten().logsumexp(0) - math.log(raw_s.numel()),
                                        raw_t.detach().flatten().logsumexp(0) - math.log(raw_t.numel())])
                head.log_z.copy_(torch.where(torch.isnan(head.log_z), estimate + math.log(self.num_samples),
                                             head.log_z))
            terms.append(nce_loss(raw_s - head.log_z[0], self.num_samples)
                         + nce_loss(raw_t - head.log_z[1], self.num_samples))
            if self.training:
                self._update(head.memory_student, index, v_s)
                self._update(head.memory_teacher, index, v_t)
        return torch.stack(terms).mean()

    @torch.no_grad()
    def _update(self, memory: Tensor, index: Tensor, embedding: Tensor) -> None:
        moved = memory[index] * self.momentum + embedding.detach() * (1 - self.momentum)
        memory.index_copy_(0, index, F.normalize(moved, dim=1))
