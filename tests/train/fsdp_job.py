"""A token-level KD job with an online teacher and validation, as one process or sharded with FSDP2 (test_fsdp.py).

    python -m tests.train.fsdp_job OUT                                   # one process, unsharded
    ACCELERATE_USE_FSDP=true FSDP_VERSION=2 torchrun --nproc_per_node 2 -m tests.train.fsdp_job OUT [--kill-at N]
        [--resume] [--activation-checkpointing] [--gkd]

It writes OUT/result.json (world size, summary, what the teacher held), OUT/model.safetensors (the student after
`fit`, saved without torch.distributed by the main process) and OUT/last.safetensors (the last weights, which
`select: best` replaced). `--kill-at N` sends SIGKILL to rank 0 while it computes step N. `--gkd` trains with
on-policy `gkd` (lmbda 1: every step generates from the student) on rows trimmed per batch, so the processes'
batches, and their rollouts, differ in width; result.json then holds each process's batch widths.
"""

import argparse
import os
import signal
from pathlib import Path

import torch

from kdforge import io
from kdforge.app.build import build_loss
from kdforge.data.tensors import PaddedRows
from kdforge.evaluate import validator
from kdforge.llm.data import encode, tiny_causal_lm, train_tokenizer
from kdforge.losses.gkd import on_policy_step
from kdforge.processes import make_accelerator
from kdforge.recipe import LossTerm
from kdforge.train.config import LoopConfig
from kdforge.train.loop import TrainJob, fit
from kdforge.train.module import DistillModule, OnlineTeacher, standard_step

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Return the list of names in this module.",
         "A tiny corpus is enough for a tokenizer test.", "Each process takes its share of the global batch.",
         "Padding tokens never count in the loss.", "The teacher runs without gradients in eval mode."]
HELD_OUT = ["The lazy dog returns the names.", "Each teacher takes a tiny share.", "Gradients count in the loss."]
INPUTS = ["input_ids", "attention_mask"]
STEPS = 8


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--gkd", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    tokenizer = train_tokenizer(TEXTS + HELD_OUT, 280)
    data, val = encode(TEXTS * 4, tokenizer, seq_len=20), encode(HELD_OUT * 3, tokenizer, seq_len=20)
    teacher = tiny_causal_lm("llama", layers=2, hidden=32, heads=2, vocab_size=280, seed=1)
    student = tiny_causal_lm("llama", layers=2, hidden=32, heads=2, vocab_size=280, seed=0)
    term = (LossTerm(name="gkd", lmbda=1.0, prompt_len=4, temperature=1.0) if args.gkd
            else LossTerm(name="token_kd", divergence="jsd", chunk_size=64))
    if args.gkd:  # rows long enough not to be cut, each batch trimmed to its longest row
        data = PaddedRows(encode(TEXTS * 4, tokenizer, seq_len=48).tensors)
    module = DistillModule(student, build_loss([term]), INPUTS, {})
    cfg = LoopConfig(max_steps=STEPS, batch_size=8, optimizer="adamw", lr=3e-3, weight_decay=0.01, grad_clip=0.5,
                     progress=False, eval_every=2, checkpoint_every=2, checkpoint_minutes=None, select="best",
                     monitor="val/loss", activation_checkpointing=args.activation_checkpointing)
    online = OnlineTeacher(teacher, INPUTS, {})
    seen = {"teacher_training": [], "teacher_grads": [], "widths": []}
    inner = on_policy_step(standard_step) if args.gkd else standard_step
    calls = 0
    accelerator = make_accelerator(None)

    def step(prepared, source, batch):
        nonlocal calls
        calls += 1
        if args.kill_at is not None and calls == args.kill_at and accelerator.is_main_process:
            os.kill(os.getpid(), signal.SIGKILL)
        seen["widths"].append(batch["input_ids"].shape[1])
        terms = inner(prepared, source, batch)
        seen["teacher_training"].append(online.model.training)
        seen["teacher_grads"].append(any(p.requires_grad or p.grad is not None for p in online.model.parameters()))
        return terms

    job = TrainJob("fsdp", module, online, data, cfg, STEPS, out, validator(val, INPUTS, None, 16), step)
    summary = fit(job, accelerator, resume=args.resume)
    widths = [seen["widths"]]
    if accelerator.num_processes > 1:
        widths = [None] * accelerator.num_processes
        torch.distributed.all_gather_object(widths, seen["widths"])
    state = {k: v.contiguous() for k, v in student.state_dict().items()}
    io.save_tensors(out / "model.safetensors", state)
    if summary.last_weights is not None:
        io.save_tensors(out / "last.safetensors", {k: v.contiguous() for k, v in summary.last_weights.items()})
    io.write_json(out / "result.json", {
        "world_size": accelerator.num_processes, "steps": summary.steps, "best_step": summary.best_step,
        "evals": summary.evals, "teacher_ever_training": any(seen["teacher_training"]),
        "teacher_ever_grads": any(seen["teacher_grads"]),
        "plain_after": all(type(p) is torch.nn.Parameter for p in module.parameters())
        and all(type(p) is torch.nn.Parameter for p in teacher.parameters()),
        "student_class": type(student).__name__, "widths": widths})


if __name__ == "__main__":
    main()
