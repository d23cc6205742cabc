"""Agarwal et al., "On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes" (GKD),
ICLR 2024. https://arxiv.org/abs/2306.13649

Generalised knowledge distillation trains the student on a mix of fixed sequences (the dataset) and sequences
the student generates itself, each scored token by token by the teacher with the generalised JSD (beta). With
probability `lmbda` a step is on-policy: the batch's prompts (its first `prompt_len` tokens) are continued by
the student (sampling at `temperature`, no gradient), and the teacher and student distributions are compared
on the generated tokens only. `lmbda = 0` is supervised KD on the fixed data; `lmbda = 1` is fully on-policy.
Whether step s is on-policy depends only on (seed, s), so a resumed run makes the same choices.

The loss is `token_kd` with `divergence="jsd"`; what GKD adds is the step: `on_policy_step`, registered as
`step=`, is handed the standard step and returns GKD's, which the training loop runs instead. The teacher must
run online (a cached teacher has no outputs for student-generated text).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn

from kdforge.lm.distillspec import evaluate_draft
from kdforge.lm.rows import EOS, PAD, continuation_lengths, lm_rows
from kdforge.losses.protocols import StepFn, TeacherSource
from kdforge.losses.token_kd import TokenKDLoss
from kdforge.registry import LOSSES
from kdforge.types import Batch
from kdforge.validation import check_probability


def _gkd_term(module: nn.Module) -> GKDLoss:
    loss = module.loss
    terms = loss.terms.values() if hasattr(loss, "terms") else [loss]
    found = [term for term in terms if isinstance(term, GKDLoss)]
    if len(found) != 1:
        raise ValueError(f"gkd_step: the objective must hold exactly one gkd term; found {len(found)}.")
    return found[0]


def _lockstep() -> bool:
    """Generate in lockstep (transformers' `synced_gpus`) when several processes train together: under FSDP
    every forward gathers weights from all processes, so a process whose rows all ended (EOS, or a narrower
    batch) keeps running forward passes until every process is done, instead of leaving the others waiting."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def student_rollouts(student: nn.Module, batch: Batch, prompt_len: int, temperature: float, seed: int) -> Batch:
    """The batch's first `prompt_len` tokens continued by the student (sampling) to the batch's length, as
    causal-LM rows whose labels count only the generated tokens; `index` is kept. With several processes they
    generate in lockstep (`_lockstep`)."""
    ids = batch["input_ids"]
    width = ids.shape[1]
    prompts = ids[:, :prompt_len]
    was_training = student.training
    student.eval()
    devices = [ids.device] if ids.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = student.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                                   temperature=temperature, top_k=0, max_new_tokens=width - prompt_len,
                                   eos_token_id=EOS, pad_token_id=PAD, synced_gpus=_lockstep())
    finally:
        student.train(was_training)
    rows = torch.full_like(ids, PAD)
    rows[:, : out.shape[1]] = out
    lengths = continuation_lengths(rows, prompt_len)
    rows[torch.arange(width, device=ids.device).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    made = lm_rows(rows.cpu(), lengths.cpu(), prompt_lengths=torch.full((len(rows),), prompt_len))
    generated = {key: value.to(ids.device) for key, value in made.tensors.items() if key != "index"}
    return {**batch, **generated}


def on_policy_step(standard: StepFn) -> StepFn:
    """GKD's step, built on the standard one (passed in, so this module needs nothing from the train layer):
    with probability lmbda (fixed by seed and step) the batch becomes student rollouts; then teacher forward,
    student forward and loss as in `standard`."""

    def gkd_step(module: nn.Module, teacher: TeacherSource | None, batch: Batch) -> dict[str, Tensor]:
        inner = getattr(module, "module", module)  # unwrapped from DistributedDataParallel
        term = _gkd_term(inner)
        step = int(getattr(inner.loss, "step", 0))
        if term.on_policy(step):
            batch = student_rollouts(inner.student, batch, term.prompt_len, term.temperature,
                                     seed=term.seed * 1_000_003 + step)
        return standard(module, teacher, batch)

    return gkd_step


@LOSSES.register(
    "gkd",
    example={"lmbda": 0.5, "beta": 0.5},
    paper="Agarwal et al. 2024, https://arxiv.org/abs/2306.13649",
    summary="on-policy GKD: generalised JSD(beta) on a lmbda-mix of fixed and student-generated sequences",
    step=on_policy_step,
    evaluate=evaluate_draft,
)
class GKDLoss(TokenKDLoss):
    """Generalised KD: token-level generalised JSD (beta) on fixed or student-generated sequences (see module).

    The value on a batch is `token_kd` with divergence="jsd"; the registered step decides, per optimizer
    step, whether the batch is the data's or the student's own continuations of the data's prompts.

    Args:
        lmbda: Fraction of steps that are on-policy, in [0, 1] (the paper's lambda).
        beta: Generalised JSD interpolation in [0, 1] (0 = forward KL, 1 = reverse KL; TRL's convention).
        temperature: Sampling temperature of the rollouts, and the divergence's temperature (value scaled by T²).
        prompt_len: Tokens of each row kept as the prompt of a rollout (BOS counts).
        seed: Seeds which steps are on-policy and the rollouts' sampling.
        chunk_size: Tokens per chunk of the divergence (see token_kd).

    Example:
        >>> import torch
        >>> from kdforge.losses.base import Outputs, Targets
        >>> loss = GKDLoss(lmbda=0.5)
        >>> loss(Outputs(logits=torch.randn(2, 3, 9)), Outputs(logits=torch.randn(2, 3, 9)), Targets()).shape
        torch.Size([])
    """

    def __init__(self, lmbda: float = 0.5, beta: float = 0.5, temperature: float = 1.0, prompt_len: int = 4,
                 seed: int = 0, chunk_size: int = 1024) -> None:
        super().__init__(divergence="jsd", beta=beta, temperature=temperature, chunk_size=chunk_size)
        self.lmbda = check_probability(lmbda, "lmbda", "GKDLoss")
        if not (isinstance(prompt_len, int) and prompt_len >= 1):
            raise ValueError(f"The 'prompt_len' parameter of GKDLoss must be an integer >= 1. Got {prompt_len!r}.")
        self.prompt_len, self.seed = prompt_len, seed

    def on_policy(self, step: int) -> bool:
        """Is optimizer step `step` on-policy? Depends only on (seed, step)."""
        return random.Random(self.seed * 1_000_003 + step).random() < self.lmbda

