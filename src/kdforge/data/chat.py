"""`text:lm_file`: a causal language model's data from the user's files, plain text or chat conversations.

    data:
      source: text:lm_file
      args: {path: chat.jsonl, tokenizer: "hf:teacher", seq_len: 256, format: auto, assistant_only: true,
             packing: false}

Records come from `kdforge.data.text_file.read_records` (JSON Lines, CSV/TSV, text, Parquet, a `datasets`
folder, `hf:<hub name>`). A record with `messages` (a list of {role, content}) is a chat, rendered with the
tokenizer's chat template; one with `text` is a document, framed as [BOS] text [EOS] (each added only when the
tokenizer did not add it already). Rendered chats are encoded with `add_special_tokens=False`, so a template that
writes the BOS itself does not get a second one.

Which tokens are trained (`assistant_only`, default for chats): only the assistant's turns, found with the
template's `{% generation %}` markers (transformers' assistant mask) or, for a template without them, by rendering
each prefix of the conversation (the text between "prefix + generation prompt" and "prefix + reply" is the reply).
Rows follow `kdforge.lm.rows.lm_rows` (labels = the next token; -100 where the next token is not trained on).

`packing: true` concatenates the examples and cuts them into full `seq_len` rows (attention is not reset at
document boundaries, as in common pre-training practice); `packing: false` keeps one example per row, cut at
`seq_len`, and the training batches are padded only to their longest row (`kdforge.data.tensors.PaddedRows`).

`teacher_tokenizer` (with `teacher_seq_len`, `teacher_bos`) pairs text records across two tokenizers for
cross-tokenizer distillation (`kdforge.data.lm_pairs`; chat records and packing are refused there).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kdforge.data.bundle import DataBundle, permutation_split
from kdforge.data.lm import train_tokenizer
from kdforge.data.lm_pairs import check_pairable, paired_bundle
from kdforge.data.sources import TEXT_DATASETS
from kdforge.data.tensors import PaddedRows
from kdforge.data.text_file import read_records
from kdforge.errors import RecipeError
from kdforge.lm.rows import lm_rows
from kdforge.lm.tokenizers import CHAT_TEMPLATE, load_lm_tokenizer, render, with_padding
from kdforge.types import IGNORE_INDEX, DataInfo, TensorData

logger = logging.getLogger("kdforge")

FORMATS = ("auto", "text", "chat")
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

Example = tuple[list[int], list[bool]]  # token ids, and whether each token is trained on (predicted)


def bpe_chat_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> Any:
    """The `tokenizer: bpe` of `text:lm_file`: a transformers tokenizer over `kdforge.data.lm.train_tokenizer`
    (byte-level BPE trained on `texts`; PAD, BOS, EOS, UNK at ids 0-3, as `tiny_causal_lm` expects) with the
    project's chat template (`kdforge.lm.tokenizers.CHAT_TEMPLATE`)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(list(texts), vocab_size),
                                        pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def lm_tokenizer(spec: str, train_texts: Sequence[str], vocab_size: int | None, base_dir: str | Path | None,
                 where: str) -> Any:
    """`hf:<folder or hub name>` (kdforge.lm.tokenizers.load_lm_tokenizer), or `bpe` trained on `train_texts`."""
    if spec == "bpe":
        return with_padding(bpe_chat_tokenizer(train_texts, 512 if vocab_size is None else vocab_size), spec, where)
    if not (isinstance(spec, str) and spec.startswith("hf:")):
        raise RecipeError(f"{where}: unknown tokenizer {spec!r}; use 'hf:<folder with tokenizer files>' (what "
                          "save_pretrained writes) or 'bpe' (trained in-process on the training records).")
    if vocab_size is not None:
        raise RecipeError(f"{where.removesuffix('.tokenizer')}.vocab_size only sizes the in-process 'bpe' "
                          f"tokenizer; {spec!r} brings its own vocabulary (remove vocab_size).")
    return load_lm_tokenizer(spec, base_dir, where)


def encode_text(tokenizer: Any, text: str) -> Example:
    """[BOS] text [EOS] (each special token once); every token but the first is trained on."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids, [False] + [True] * (len(ids) - 1)


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], assistant_only: bool = True,
                where: str = "data") -> Example:
    """The conversation rendered with the tokenizer's chat template; with `assistant_only`, only the assistant's
    tokens are trained on (see the module docstring), else every token but the first."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise RecipeError(f"{where}.args.tokenizer: the tokenizer has no chat template, so chat records cannot be "
                          "rendered; save one with the tokenizer (tokenizer.chat_template = ...; save_pretrained), "
                          "or give text records.")
    if not assistant_only:
        ids = list(tokenizer(render(tokenizer, messages), add_special_tokens=False)["input_ids"])
        return ids, [False] + [True] * (len(ids) - 1)
    if GENERATION_MARKER.search(template):
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        return list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
    return _assistant_by_prefixes(tokenizer, messages, where)


def _assistant_by_prefixes(tokenizer: Any, messages: list[dict[str, str]], where: str) -> Example:
    """Assistant tokens of a template without generation markers: each reply is the text that rendering the
    conversation up to it adds after rendering the turns before it with the generation prompt."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = render(tokenizer, messages[:i], add_generation_prompt=True)
        end = render(tokenizer, messages[: i + 1])
        if not (end.startswith(start) and text.startswith(end)) or len(end) <= len(start):
            raise RecipeError(f"{where}.args.tokenizer: the chat template does not render a conversation as the "
                              "rendering of its first turns plus the rest, so the assistant's tokens cannot be "
                              "found; add {% generation %} ... {% endgeneration %} around the assistant's reply "
                              "in the template, or set assistant_only: false.")
        spans.append((len(start), len(end)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    trained = [any(lo <= first < hi for lo, hi in spans) for first, _ in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), trained


def rows_of(examples: Sequence[Example], seq_len: int, packing: bool, pad_id: int,
            name: str) -> TensorData | None:
    """`kdforge.lm.rows` rows from encoded examples (packed into `seq_len` rows, or one per row, cut at
    `seq_len`); rows with nothing to train on are left out. None when no row remains."""
    if packing:
        ids = [i for example, _ in examples for i in example]
        trained = [t for _, flags in examples for t in flags]
        chunks = [(ids[s:s + seq_len], trained[s:s + seq_len]) for s in range(0, len(ids), seq_len)]
    else:
        chunks = [(example[:seq_len], flags[:seq_len]) for example, flags in examples]
    chunks = [chunk for chunk in chunks if any(chunk[1][1:])]  # the first token of a row is never predicted
    if not chunks:
        return None
    tokens = torch.full((len(chunks), seq_len), pad_id, dtype=torch.long)
    targets = torch.zeros((len(chunks), seq_len), dtype=torch.long)
    for row, (chunk_ids, flags) in enumerate(chunks):
        tokens[row, : len(chunk_ids)] = torch.tensor(chunk_ids)
        targets[row, : len(flags)] = torch.tensor(flags, dtype=torch.long)
    lengths = torch.tensor([len(chunk_ids) for chunk_ids, _ in chunks])
    rows = lm_rows(tokens, lengths)
    # "the next token is trained on", shifted exactly as the labels are (lm_rows is the one place that shifts)
    next_trained = lm_rows(targets, lengths).tensors["labels"] == 1
    labels = torch.where(next_trained, rows.tensors["labels"], IGNORE_INDEX)
    tensors = {**rows.tensors, "labels": labels, "mask": labels != IGNORE_INDEX}
    # packed rows are full (the last one aside), so only unpacked ones are cut to each batch's longest row
    return TensorData(tensors, name=name) if packing else PaddedRows(tensors, name=name)


def examples_of(records: Sequence[dict[str, Any]], tokenizer: Any, format: str, assistant_only: bool,
                text_field: str, messages_field: str, where: str) -> list[Example]:
    """Each record encoded as text or chat (`format: auto` decides per record by its fields)."""
    out = []
    for number, record in enumerate(records, start=1):
        kind = format
        if kind == "auto":
            kind = "chat" if messages_field in record else "text" if text_field in record else ""
        field = messages_field if kind == "chat" else text_field
        if field not in record:
            raise RecipeError(f"{where}.args.format: record {number} has no {field!r} field"
                              f"{'' if format != 'auto' else f' nor {text_field!r}'}; its fields are "
                              f"{', '.join(map(repr, record))} (name them with text_field / messages_field).")
        if kind == "text":
            if assistant_only:
                raise RecipeError(f"{where}.args.assistant_only: record {number} is plain text, which has no "
                                  "assistant turns; set assistant_only: false (or give chat records).")
            out.append(encode_text(tokenizer, str(record[field])))
        else:
            out.append(encode_chat(tokenizer, _messages(record[field], number, where), assistant_only, where))
    return out


def _messages(value: Any, number: int, where: str) -> list[dict[str, str]]:
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value)
    if not ok:
        raise RecipeError(f"{where}.args.path: record {number}'s messages must be a non-empty list of "
                          "{role, content} objects with string values.")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _texts(records: Sequence[dict[str, Any]], text_field: str, messages_field: str) -> list[str]:
    """The raw text of records (what the in-process 'bpe' tokenizer is trained on)."""
    texts = []
    for record in records:
        if isinstance(record.get(messages_field), list):
            texts.extend(str(m.get("content", "")) for m in record[messages_field] if isinstance(m, dict))
        elif text_field in record:
            texts.append(str(record[text_field]))
    return texts


@TEXT_DATASETS.register("lm_file")
def lm_file(path: str, tokenizer: str = "bpe", seq_len: int = 256, format: str = "auto",
            assistant_only: bool | None = None, packing: bool = False, text_field: str = "text",
            messages_field: str = "messages", split: str = "train", vocab_size: int | None = None,
            limit: int | None = None, test_size: float = 0.1, val_size: float = 0.1, seed: int = 0,
            teacher_tokenizer: str | None = None, teacher_seq_len: int | None = None,
            teacher_bos: bool | None = None, base_dir: str | Path | None = None,
            where: str = "data") -> tuple[DataBundle, Any]:
    """(DataBundle, tokenizer) of causal-LM rows from the user's text or chat records (module docstring).

    Records are split into train / val / test before packing (no row mixes two splits); `limit` keeps the first
    records. `assistant_only` defaults to true when the records are chats and false for text. With
    `teacher_tokenizer` (`hf:<folder or hub name>`) text records become paired cross-tokenizer rows
    (`kdforge.data.lm_pairs`)."""
    if format not in FORMATS:
        raise RecipeError(f"{where}.args.format: {format!r} is not one of {', '.join(FORMATS)}.")
    if not isinstance(seq_len, int) or seq_len < 2:
        raise RecipeError(f"{where}.args.seq_len: give an integer >= 2; got {seq_len!r}.")
    source: str | Path = path
    if not path.startswith("hf:"):
        source = Path(path).expanduser()
        if not source.is_absolute() and base_dir is not None:
            source = Path(base_dir) / source
    records = read_records(source, None, split, where)[:limit]
    if assistant_only is None:
        assistant_only = format == "chat" or (format == "auto" and messages_field in records[0])
    for key, value in (("teacher_seq_len", teacher_seq_len), ("teacher_bos", teacher_bos)):
        if value is not None and teacher_tokenizer is None:
            raise RecipeError(f"{where}.args.{key} only shapes the teacher's rows of paired data; give "
                              f"{where}.args.teacher_tokenizer too, or remove {key}.")
    if teacher_tokenizer is not None:  # refused before any tokenizer loads or trains
        check_pairable(records, format, assistant_only, packing, text_field, messages_field, Path(path).name, where)
    train, val, test = permutation_split(len(records), test_size, val_size, seed)
    tok = lm_tokenizer(tokenizer, _texts([records[i] for i in train.tolist()], text_field, messages_field),
                       vocab_size, base_dir, f"{where}.args.tokenizer")
    if teacher_tokenizer is not None:
        return paired_bundle(records, tok, teacher_tokenizer, seq_len, teacher_seq_len, teacher_bos, text_field,
                             (train, val, test), test_size, base_dir, where), tok
    parts = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        examples = examples_of([records[i] for i in part.tolist()], tok, format, assistant_only, text_field,
                               messages_field, where)
        long = sum(len(ids) > seq_len for ids, _ in examples)
        if long and not packing:
            logger.info("%s: %d of %d %s examples are longer than seq_len=%d and are cut", where, long,
                        len(examples), name, seq_len)
        parts[name] = rows_of(examples, seq_len, packing, tok.pad_token_id, name) if len(part) else None
    for name in ("train", "test"):
        if parts[name] is None:
            raise RecipeError(f"{where}.args: no {name} row has a token to train on ({len(records)} records, "
                              f"test_size {test_size}); give more records, a larger seq_len, or check "
                              "assistant_only.")
    offset = 0
    for part in parts.values():  # sample ids unique across the splits (teacher caches key on them)
        if part is not None:
            part.tensors["index"] = torch.arange(offset, offset + len(part))
            offset += len(part)
    bundle = DataBundle(DataInfo((seq_len,), len(tok)), teacher_train=parts["train"], student_train=parts["train"],
                        scratch_train=parts["train"], val=parts["val"], test=parts["test"])
    return bundle, tok


__all__ = ["FORMATS", "bpe_chat_tokenizer", "encode_chat", "encode_text", "examples_of", "lm_file", "lm_tokenizer",
           "rows_of"]
