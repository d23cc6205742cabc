"""The settings the training loop and its optimizer read (and the Accelerator's precision): plain data, no schema.

The application validates its recipe's `train:` block and converts it (`kdforge.app.build.loop_config`); code that
drives `fit` directly builds a `LoopConfig` itself. Defaults match the recipe's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class LoopConfig:
    """How `fit` trains one model. Values are trusted here: the recipe schema checked them."""

    epochs: int = 10  # passes over the training set (`steps_for`; ignored when max_steps is set)
    max_steps: int | None = None  # optimizer steps; overrides epochs
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    scheduler: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = None  # max global gradient norm
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_every: int | None = None  # validate every N steps; None: once per epoch
    checkpoint_every: int | None = None  # also checkpoint every N steps; None: by time and events only
    checkpoint_minutes: float | None = 10.0  # checkpoint when this much wall-clock time passed since the last one
    keep_checkpoints: int = 1
    select: Literal["last", "best"] = "last"  # keep the last weights, or the best on `monitor`
    monitor: str = "val/accuracy"  # validation metric for select=best and patience (maximised)
    patience: int | None = None  # stop after N evaluations without improvement
    seed: int = 0  # the batch order
    progress: bool = True  # show a progress bar
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss stops the run, or its step is skipped and counted
    max_nonfinite: int = 10  # nonfinite: skip stops the run after this many skipped steps
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None  # for the caller's Accelerator; None: as launched
    activation_checkpointing: bool = False  # recompute the student's blocks' activations in backward (less memory)
