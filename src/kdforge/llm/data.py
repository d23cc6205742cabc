"""Causal-LM data from local text: a tokenizer trained in-process and fixed-length next-token batches.

`stdlib_lm()` turns the standard library's docstring sentences (`kdforge.data.corpus`, no download) into a
`DataBundle` of dict batches:

    input_ids       (N, L) int64   [BOS] sentence tokens [EOS], then [PAD]
    attention_mask  (N, L) int64   1 on real tokens
    labels          (N, L) int64   the next token (input_ids shifted left); -100 where nothing follows
    mask            (N, L) bool    labels != -100: the positions losses and metrics count
    index           (N,)   int64   stable sample ids (teacher caches)

Position t's logits predict labels[t], so teacher and student logits align without any shift in the losses.
Rows are split into train / val / test by a seeded permutation (rows are fixed-length padded sequences).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from kdforge.data import DataBundle
from kdforge.data.corpus import stdlib_sentences
from kdforge.data.tensors import TensorData
from kdforge.losses.base import IGNORE_INDEX
from kdforge.models import DataInfo

PAD, BOS, EOS = 0, 1, 2
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


def split_rows(data: TensorData, test_size: float, val_size: float, seed: int) -> DataBundle:
    """A DataBundle (teacher, student and scratch train are the same rows) from a seeded row permutation."""
    from kdforge.data.text import permutation_split, shared_rows_bundle

    vocab = int(data.tensors["input_ids"].max()) + 1
    return shared_rows_bundle(DataInfo((data.tensors["input_ids"].shape[1],), vocab), data,
                              *permutation_split(len(data), test_size, val_size, seed))


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


def tiny_causal_lm(arch: str = "gpt2", layers: int = 2, hidden: int = 64, heads: int = 4, vocab_size: int = 512,
                   max_positions: int = 128, seed: int = 0):
    """A random-weight `transformers` causal LM (GPT-2 or Llama) from a config: no download."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    special = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}
    if arch == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, vocab_size=vocab_size,
                            n_positions=max_positions, **special)
        return GPT2LMHeadModel(config)
    if arch == "llama":
        config = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                             num_key_value_heads=heads, intermediate_size=4 * hidden, vocab_size=vocab_size,
                             max_position_embeddings=max_positions, **special)
        return LlamaForCausalLM(config)
    raise ValueError(f"tiny_causal_lm: arch must be 'gpt2' or 'llama'; got {arch!r}.")


def _text_sources() -> dict:
    from kdforge.data import retrieval, text

    return {"stdlib_lm": stdlib_lm, "stdlib_topics": text.stdlib_topics, "stdlib_tags": text.stdlib_tags,
            "stdlib_mlm": text.stdlib_mlm, "stdlib_sentences": text.stdlib_sentences,
            "stdlib_retrieval": retrieval.stdlib_retrieval, "file": text.text_file}


TEXT_SOURCES = _text_sources()


def text_source(spec, base_dir=None) -> DataBundle:
    """The DataBundle for a recipe's `data.source: text:<name>` (args from `data.args`; the split from
    test_size, val_size and split_seed; `base_dir`, the recipe's folder, for a local `hf:` tokenizer).
    Sources with a `student_labels` parameter (labelled ones, like stdlib_topics) honour `data.student_labels`
    and `data.transfer_set`; the others reject `student_labels`."""
    from kdforge.data.text import TextTokenizer, accepts_student_labels, check_source_args
    from kdforge.errors import RecipeError
    from kdforge.validation import unknown_name

    name = spec.source.removeprefix("text:")
    if name not in TEXT_SOURCES:
        raise unknown_name("text source", name, TEXT_SOURCES, where="recipe.data.source")
    source = TEXT_SOURCES[name]
    check_source_args(name, source, spec.args)
    kwargs = dict(spec.args, test_size=spec.test_size, val_size=spec.val_size, seed=spec.split_seed)
    if accepts_student_labels(source):
        kwargs.update(student_labels=spec.student_labels, transfer_set=spec.transfer_set)
    elif spec.student_labels is not None:
        raise RecipeError(f"recipe.data.student_labels: text:{name} has no labelled subset (its labels are per "
                          "token or there are none); remove it, or use text:stdlib_topics.")
    if "base_dir" in inspect.signature(source).parameters:
        kwargs["base_dir"] = base_dir
    try:
        bundle, tokenizer = source(**kwargs)
    except TypeError as exc:
        raise RecipeError(f"recipe.data.args: text:{name} does not accept these arguments ({exc}).") from exc
    if tokenizer is not None:  # saved with the run (tokenizer.json)
        bundle.tokenizer = tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer(tokenizer)
    return bundle
