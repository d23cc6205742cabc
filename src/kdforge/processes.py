"""Seeds, and the process layout under `torchrun` / `accelerate launch` (one process by default).

Library code (the loop, a cache build, the run folder) asks here who the main process is, so the answer is
the same everywhere: on a machine without CUDA, several launched processes form a gloo group on the CPU.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # accelerate is imported when a process layout is asked for: resolving the API need not pay it
    from accelerate import Accelerator, PartialState


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch generators from one seed (model initialisation, data order, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def launched_on_cpu_only() -> bool:
    """Started by `torchrun`/`accelerate launch` with several processes on a machine without CUDA.

    Accelerate forms the process group on CPU (gloo) only when told `cpu=True`; without it every process
    would silently train alone on the whole data and write the same files.
    """
    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    xpu = getattr(torch, "xpu", None)
    return launched and not torch.cuda.is_available() and not (xpu is not None and xpu.is_available())


def process_state() -> PartialState:
    """The process layout (rank, world size), initialised the way `make_accelerator` needs it."""
    from accelerate import PartialState

    return PartialState(cpu=launched_on_cpu_only())


def make_accelerator(mixed_precision: str | None = None) -> Accelerator:
    """One Accelerator for the run; device and process layout come from `accelerate launch` or `torchrun`
    (CPU by default; several CPU processes use gloo)."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision=mixed_precision, cpu=launched_on_cpu_only())
