"""A recipe run whose teacher is loaded (`hf:` folder), as one process or as FSDP2 processes (test_fsdp_teacher.py).

    python -m tests.train.meta_teacher_job RECIPE OUT                                          # one process
    ACCELERATE_USE_FSDP=true FSDP_VERSION=2 torchrun --nproc_per_node 2 -m tests.train.meta_teacher_job RECIPE OUT

Every `fully_shard` call is watched: OUT/probe-<rank>.json holds the most teacher parameter elements this process
held in memory (not on the meta device) when `fully_shard` reached a module of the teacher, whether the teacher is
still sharded after the run, and (rank 0) OUT/teacher_logits.safetensors: the teacher's logits on fixed rows.
"""

import argparse
import json
import logging
import os
from pathlib import Path

import torch
import torch.distributed.fsdp as fsdp
from torch.distributed.tensor import DTensor

from kdforge import io
from kdforge.app.run import run_recipe
from kdforge.recipe import load_recipe

CALLS: list[tuple[torch.nn.Module, int]] = []


def _held(module: torch.nn.Module) -> int:
    """Parameter elements of `module` this process holds in memory (its local shard once sharded)."""
    local = [p.to_local() if isinstance(p, DTensor) else p for p in module.parameters()]
    return sum(t.numel() for t in local if not t.is_meta)


def _watch_fully_shard() -> None:
    original = fsdp.fully_shard

    def recording(module, *args, **kwargs):
        CALLS.append((module, _held(module)))
        return original(module, *args, **kwargs)

    recording.state = original.state  # sharding.py calls fully_shard.state(...)
    fsdp.fully_shard = recording


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _watch_fully_shard()
    out = Path(args.out)
    result = run_recipe(load_recipe(args.recipe), out_dir=out)
    teacher = result.teacher
    own = {id(m) for m in teacher.modules()}
    held = [count for module, count in CALLS if id(module) in own]
    rows = torch.arange(2, 26).reshape(2, 12)
    with torch.no_grad():  # collective while the teacher is sharded: every process runs it
        logits = teacher(input_ids=rows).logits
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        io.save_tensors(out / "teacher_logits.safetensors", {"logits": logits.contiguous()})
    (out / f"probe-{rank}.json").write_text(json.dumps({  # every process writes its own (io writes on rank 0)
        "teacher_shard_calls": len(held), "teacher_elements_held_at_sharding": max(held, default=None),
        "teacher_elements": sum(p.numel() for p in teacher.parameters()),
        "teacher_sharded_after": any(isinstance(p, DTensor) for p in teacher.parameters())}))


if __name__ == "__main__":
    main()
