"""Causal-LM data from local text: a tokenizer trained in-process and fixed-length next-token rows.

`stdlib_lm()` (`data.source: text:stdlib_lm`) turns the standard library's docstring sentences
(`kdforge.data.corpus`, no download) into a `DataBundle` of dict batches:

    input_ids       (N, L) int64   [BOS] sentence tokens [EOS], then [PAD]
    attention_mask  (N, L) int64   1 on real tokens
    labels          (N, L) int64   the next token (input_ids shifted left); -100 where nothing follows
    mask            (N, L) bool    labels != -100: the positions losses and metrics count
    text_bytes      (N,)   int64   UTF-8 bytes of the text the row covers (bits per byte)
    index           (N,)   int64   stable sample ids (teacher caches)

Position t's logits predict labels[t], so teacher and student logits align without any shift in the losses.
Rows are split into train / val / test by a seeded permutation (rows are fixed-length padded sequences).
"""

from __future__ import annotations

import torch

from kdforge.data.bundle import DataBundle, permutation_split, shared_rows_bundle
from kdforge.data.corpus import stdlib_sentences
from kdforge.data.lm_tokenizers import SPECIAL_TOKENS, TOKENIZER_KINDS, train_bpe, train_lm_tokenizer
from kdforge.data.sources import TEXT_DATASETS
from kdforge.errors import RecipeError
from kdforge.lm.rows import BOS, EOS, PAD, lm_rows  # the one row format (also built in training)
from kdforge.types import DataInfo, TensorData


def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (`tokenizers`) trained on `texts`; ids 0-3 are PAD, BOS, EOS, UNK."""
    return train_bpe(texts, vocab_size)


def encode(texts: list[str], tokenizer, seq_len: int) -> TensorData:
    """Fixed-length causal-LM rows (see the module docstring); longer texts are cut at seq_len tokens."""
    encodings = tokenizer.encode_batch(texts)
    rows = [[BOS, *enc.ids, EOS][:seq_len] for enc in encodings]
    ids = torch.full((len(rows), seq_len), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    lengths = torch.tensor([len(r) for r in rows])
    # UTF-8 bytes of the text the kept tokens cover: bits per byte (kdforge.metrics.task.bits_per_byte)
    covered = [text if len(enc.ids) <= seq_len - 2 else text[: max((end for _, end in enc.offsets[: seq_len - 1]),
                                                                    default=0)]
               for text, enc in zip(texts, encodings, strict=True)]
    data = lm_rows(ids, lengths)
    return data.with_tensor("text_bytes", torch.tensor([len(c.encode("utf-8")) for c in covered]))


def split_rows(data: TensorData, test_size: float, val_size: float, seed: int) -> DataBundle:
    """A DataBundle (teacher, student and scratch train are the same rows) from a seeded row permutation."""
    vocab = int(data.tensors["input_ids"].max()) + 1
    return shared_rows_bundle(DataInfo((data.tensors["input_ids"].shape[1],), vocab), data,
                              *permutation_split(len(data), test_size, val_size, seed))


@TEXT_DATASETS.register("stdlib_lm")
def stdlib_lm(limit: int | None = None, vocab_size: int = 512, seq_len: int = 48, test_size: float = 0.1,
              val_size: float = 0.1, seed: int = 0, tokenizer: str = "bpe", teacher_tokenizer: str | None = None,
              teacher_vocab_size: int = 512, teacher_seq_len: int | None = None,
              teacher_bos: bool = True, where: str = "data") -> tuple[DataBundle, object]:
    """(DataBundle, tokenizer) of next-token rows from the standard library's docstring sentences.

    The tokenizer (`tokenizer`: bpe | unigram | wordpiece) is trained on the training rows' sentences only, so
    held-out text stays unseen. With `teacher_tokenizer` (a second kind, `teacher_vocab_size` entries) the rows
    are paired for cross-tokenizer distillation: the teacher's tokens and the alignment of both sides ride
    beside the student's (`kdforge.lm.cross_data`). Errors name the arguments under `where` ("recipe.data" in a
    run).
    """
    if teacher_tokenizer is not None:  # too-short rows are refused before any tokenizer trains
        from kdforge.lm.cross_data import check_row_lengths

        check_row_lengths(seq_len, teacher_seq_len, teacher_bos=teacher_bos, where=f"{where}.args")
    sentences = stdlib_sentences(limit=limit, seed=seed)
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed))
    n_held = int(round(len(sentences) * test_size)) + int(round(len(sentences) * val_size))
    train_texts = [sentences[i] for i in order[n_held:].tolist()]
    if tokenizer == "bpe" and teacher_tokenizer is None:
        student = train_tokenizer(train_texts, vocab_size)
        return split_rows(encode(sentences, student, seq_len), test_size, val_size, seed), student
    from kdforge.lm.align import vocab_map
    from kdforge.lm.cross_data import paired_rows

    where = f"{where}.args"
    for key, kind in (("tokenizer", tokenizer), ("teacher_tokenizer", teacher_tokenizer or "bpe")):
        if kind not in TOKENIZER_KINDS:  # before any tokenizer trains
            raise RecipeError(f"{where}.{key}: {kind!r} is not a tokenizer kind; use one of "
                              f"{', '.join(TOKENIZER_KINDS)}.")
    student = train_lm_tokenizer(train_texts, tokenizer, vocab_size, where=f"{where}.tokenizer")
    if teacher_tokenizer is None:
        return split_rows(encode(sentences, student, seq_len), test_size, val_size, seed), student
    teacher = train_lm_tokenizer(train_texts, teacher_tokenizer, teacher_vocab_size,
                                 where=f"{where}.teacher_tokenizer")
    rows = paired_rows(sentences, student, teacher, seq_len, teacher_seq_len, teacher_bos=teacher_bos, where=where)
    bundle = split_rows(rows, test_size, val_size, seed)
    bundle.vocab_map = vocab_map(student, teacher)  # span_kl / span_hybrid compare the shared tokens through it
    return bundle, student


__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "encode", "lm_rows", "split_rows", "stdlib_lm", "train_tokenizer"]
