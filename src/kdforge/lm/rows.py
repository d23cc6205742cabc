"""kdforge's causal-LM rows: the special token ids, and labels and mask derived from ids and lengths.

Both data (`kdforge.data.lm` encodes text into these rows) and training (GKD's student rollouts, sequence-level
KD's teacher outputs) make rows, so the convention lives here, importing only torch and `kdforge.types`: a loss
can build rows without importing the data package.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdforge.types import IGNORE_INDEX, TensorData

PAD, BOS, EOS = 0, 1, 2


def lm_rows(ids: Tensor, lengths: Tensor, prompt_lengths: Tensor | None = None) -> TensorData:
    """input_ids, attention_mask, labels and mask from (N, L) ids with `lengths` real tokens per row. Labels of
    the first `prompt_lengths - 1` positions are -100 too (a prompt the student is not trained to produce)."""
    positions = torch.arange(ids.shape[1])
    real = positions.unsqueeze(0) < lengths.unsqueeze(1)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = torch.where(real[:, 1:], ids[:, 1:], IGNORE_INDEX)
    if prompt_lengths is not None:
        labels[positions.unsqueeze(0) < (prompt_lengths.unsqueeze(1) - 1)] = IGNORE_INDEX
    return TensorData({"input_ids": ids, "attention_mask": real.long(), "labels": labels,
                       "mask": labels != IGNORE_INDEX})


def continuation_lengths(sequences: Tensor, prompt_len: int) -> Tensor:
    """(N,) real tokens per row: up to and including the first EOS after the prompt, else the whole row."""
    generated = sequences[:, prompt_len:]
    is_eos = generated == EOS
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, generated.shape[1])
    return prompt_len + first
