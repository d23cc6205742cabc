"""Tiny random-weight BERTs and a few-step distillation loop for the encoder-method tests (no downloads)."""

from __future__ import annotations

import pytest
import torch

from kdforge.losses import WeightedSum
from kdforge.train.module import DistillModule, OnlineTeacher

INPUTS = ["input_ids", "attention_mask"]


def bert_config(layers=4, hidden=16, heads=2, **kw):
    transformers = pytest.importorskip("transformers")
    return transformers.BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=layers,
                                   num_attention_heads=heads, intermediate_size=2 * hidden,
                                   max_position_embeddings=16, hidden_dropout_prob=0.0,
                                   attention_probs_dropout_prob=0.0, **kw)


def tiny_mlm(layers=4, hidden=16, heads=2, seed=0, **kw):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    return transformers.BertForMaskedLM(bert_config(layers, hidden, heads, **kw))


def text_batch(n=8, t=6, seed=0):
    """Token ids with some padding at the end of odd rows; `mask` is what losses read as the real tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (n, t), generator=g)
    am = torch.ones(n, t, dtype=torch.long)
    am[1::2, -2:] = 0
    ids = ids.masked_fill(am == 0, 0)
    return {"input_ids": ids, "attention_mask": am, "mask": am.bool(), "index": torch.arange(n)}


def distil(teacher, student, loss, s_taps, t_taps, steps=30, lr=1e-2, batch=None):
    """Train `student` against `teacher` with one loss term for `steps` Adam steps; the loss values seen."""
    batch = batch or text_batch()
    source = OnlineTeacher(teacher, INPUTS, t_taps)
    module = DistillModule(student.train(), WeightedSum({"term": loss}, {"term": 1.0}), INPUTS, s_taps)
    module(batch, source(batch))  # builds lazy projectors before the optimizer sees the parameters
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    values = []
    for _ in range(steps):
        terms = module(batch, source(batch))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        values.append(terms["loss"].item())
    source.close()
    module.capture.remove()
    return values
