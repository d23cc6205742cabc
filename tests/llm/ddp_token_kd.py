"""A token-level KD run from Python, launched as one process or under torchrun (test_ddp_token_kd.py).

    python -m tests.llm.ddp_token_kd OUT_DIR          # or: torchrun --nproc_per_node 2 -m tests.llm.ddp_token_kd OUT
"""

import sys
from pathlib import Path

import torch

from kdforge import io
from kdforge.app.build import build_loss
from kdforge.llm.data import encode, tiny_causal_lm, train_tokenizer
from kdforge.processes import make_accelerator
from kdforge.recipe import LossTerm
from kdforge.train.config import LoopConfig
from kdforge.train.loop import TrainJob, fit
from kdforge.train.module import DistillModule, OnlineTeacher

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Return the list of names in this module.",
         "A tiny corpus is enough for a tokenizer test.", "Each process takes its share of the global batch.",
         "Padding tokens never count in the loss.", "The teacher runs without gradients in eval mode."]
INPUTS = ["input_ids", "attention_mask"]


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    data = encode(TEXTS * 4, train_tokenizer(TEXTS, 280), seq_len=20)
    teacher = tiny_causal_lm("llama", layers=1, hidden=32, heads=2, vocab_size=280, seed=1)  # no dropout
    student = tiny_causal_lm("llama", layers=1, hidden=32, heads=2, vocab_size=280, seed=0)
    module = DistillModule(student, build_loss([LossTerm(name="token_kd", divergence="jsd", chunk_size=64)]),
                           INPUTS, {})
    cfg = LoopConfig(max_steps=8, batch_size=8, optimizer="adamw", lr=3e-3, progress=False, checkpoint_every=100)
    job = TrainJob("token_kd", module, OnlineTeacher(teacher, INPUTS, {}), data, cfg, 8, Path(out_dir))
    accelerator = make_accelerator(None)
    fit(job, accelerator)
    io.write_json(Path(out_dir) / "world.json", {"world_size": accelerator.num_processes})
    io.save_tensors(Path(out_dir) / "model.safetensors", {k: v.contiguous() for k, v in student.state_dict().items()})


if __name__ == "__main__":
    main(sys.argv[1])
