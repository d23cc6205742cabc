"""Causal-LM data from local text: a tokenizer trained in-process and fixed-length next-token rows.

`stdlib_lm()` (`data.source: text:stdlib_lm`) turns the standard library's docstring sentences
(`kdforge.data.corpus`, no download) into a `DataBundle` of dict batches:

    input_ids       (N, L) int64   [BOS] sentence tokens [EOS], then [PAD]
    attention_mask  (N, L) int64   1 on real tokens
    labels          (N, L) int64   the next token (input_ids shifted left); -100 where nothing follows
    mask            (N, L) bool    labels != -100: the positions losses and metrics count
    index           (N,)   int64   stable sample ids (teacher caches)

Position t's logits predict labels[t], so teacher and student logits align without any shift in the losses.
Rows are split into train / val / test by a seeded permutation (rows are fixed-length padded sequences).
"""

from __future__ import annotations

import torch

from kdforge.data.bundle import DataBundle, permutation_split, shared_rows_bundle
from kdforge.data.corpus import stdlib_sentences
from kdforge.data.sources import TEXT_DATASETS
from kdforge.llm.rows import BOS, EOS, PAD, lm_rows  # the one row format (also built in training)
from kdforge.types import DataInfo, TensorData

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]


def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (`tokenizers`) trained on `texts`; ids 0-3 are PAD, BOS, EOS, UNK."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode(texts: list[str], tokenizer, seq_len: int) -> TensorData:
    """Fixed-length causal-LM rows (see the module docstring); longer texts are cut at seq_len tokens."""
    rows = [[BOS, *enc.ids, EOS][:seq_len] for enc in tokenizer.encode_batch(texts)]
    ids = torch.full((len(rows), seq_len), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    lengths = torch.tensor([len(r) for r in rows])
    return lm_rows(ids, lengths)


def split_rows(data: TensorData, test_size: float, val_size: float, seed: int) -> DataBundle:
    """A DataBundle (teacher, student and scratch train are the same rows) from a seeded row permutation."""
    vocab = int(data.tensors["input_ids"].max()) + 1
    return shared_rows_bundle(DataInfo((data.tensors["input_ids"].shape[1],), vocab), data,
                              *permutation_split(len(data), test_size, val_size, seed))


@TEXT_DATASETS.register("stdlib_lm")
def stdlib_lm(limit: int | None = None, vocab_size: int = 512, seq_len: int = 48, test_size: float = 0.1,
              val_size: float = 0.1, seed: int = 0) -> tuple[DataBundle, object]:
    """(DataBundle, tokenizer) of next-token rows from the standard library's docstring sentences.

    The tokenizer is trained on the training rows' sentences only, so held-out text stays unseen.
    """
    sentences = stdlib_sentences(limit=limit, seed=seed)
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed))
    n_held = int(round(len(sentences) * test_size)) + int(round(len(sentences) * val_size))
    tokenizer = train_tokenizer([sentences[i] for i in order[n_held:].tolist()], vocab_size)
    bundle = split_rows(encode(sentences, tokenizer, seq_len), test_size, val_size, seed)
    return bundle, tokenizer


__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "encode", "lm_rows", "split_rows", "stdlib_lm", "train_tokenizer"]
