"""`text:lm_file` with a teacher tokenizer: the user's text records as paired rows for cross-tokenizer distillation.

    data:
      source: text:lm_file
      args: {path: docs.jsonl, tokenizer: "hf:tokenizers/student", teacher_tokenizer: "hf:tokenizers/teacher",
             seq_len: 128, teacher_seq_len: 160}

Each text record is encoded by both tokenizers and aligned by character offsets (`kdforge.lm.cross_data`
.paired_rows), so the rows are those of `text:stdlib_lm` with a teacher tokenizer: the student's rows, the
teacher's rows (`teacher_*` keys) and the span ids of both sides, one text per row. The cross-tokenizer losses,
bits per byte and teacher caches read them unchanged.

Refused, with the reason, rather than approximated:

* chat records: the two tokenizers' chat templates render one conversation as two different texts, so there is
  no shared text to align and no way to make the teacher's labels mask the student's characters;
* `packing: true`: a paired row is one aligned text; packing would cut through spans on one side only;
* `assistant_only: true` (text has no assistant turns, as without a teacher tokenizer).

Each side keeps its own special tokens: BOS when the tokenizer has one (`teacher_bos` overrides the teacher's),
then the text, then EOS when the whole text fits in both rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import Tensor

from kdforge.data.bundle import DataBundle, shared_rows_bundle
from kdforge.data.text_file import require_fields
from kdforge.errors import RecipeError
from kdforge.types import DataInfo

logger = logging.getLogger("kdforge")


def check_pairable(records: list[dict[str, Any]], format: str, assistant_only: bool, packing: bool,
                   text_field: str, messages_field: str, name: str, where: str) -> None:
    """Refuse what paired rows cannot honour (module docstring) and records without `text_field` (file `name`),
    before any tokenizer loads or trains."""
    if packing:
        raise RecipeError(f"{where}.args.packing: packing cannot be combined with {where}.args.teacher_tokenizer "
                          "(a paired row holds one text aligned on both sides; packed rows would cut spans on one "
                          "side only); set packing: false.")
    chats = [n for n, record in enumerate(records, start=1)
             if format == "chat" or (format == "auto" and messages_field in record)]
    if chats:
        raise RecipeError(f"{where}.args.teacher_tokenizer: record {chats[0]} is a chat, and chat records are not "
                          "paired across tokenizers (the two chat templates render different texts, so the "
                          "teacher's labels cannot mask the same characters as the student's); give text records "
                          "or remove teacher_tokenizer.")
    if assistant_only:
        raise RecipeError(f"{where}.args.assistant_only: text records have no assistant turns; set "
                          "assistant_only: false (or remove it).")
    require_fields(records, {text_field: "text_field"}, name, where)


def specials(tokenizer: Any, bos: bool | None, field: str) -> tuple[bool, tuple[int, int, int]]:
    """(whether rows start with BOS, (BOS, EOS, PAD) ids) of a transformers tokenizer. `bos` None: when the
    tokenizer has a BOS token (as `kdforge.data.chat.encode_text` frames a text)."""
    if tokenizer.eos_token_id is None:
        raise RecipeError(f"{field}: the tokenizer has no end-of-sequence token, which ends every paired row; give "
                          "it one (eos_token in tokenizer_config.json).")
    has_bos = tokenizer.bos_token_id is not None
    if bos and not has_bos:
        raise RecipeError(f"{field.rsplit('.', 1)[0]}.teacher_bos: the teacher tokenizer has no BOS token; set "
                          "teacher_bos: false (or remove it).")
    use = has_bos if bos is None else bool(bos)
    return use, (tokenizer.bos_token_id if use else -1, tokenizer.eos_token_id, tokenizer.pad_token_id)


def paired_bundle(records: list[dict[str, Any]], student: Any, teacher_tokenizer: str, seq_len: int,
                  teacher_seq_len: int | None, teacher_bos: bool | None, text_field: str,
                  split: tuple[Tensor, Tensor, Tensor], test_size: float, base_dir: str | Path | None,
                  where: str) -> DataBundle:
    """The DataBundle of paired rows (module docstring) from text `records`; `student` is lm_file's tokenizer,
    `teacher_tokenizer` an `hf:` spec loaded as lm_file loads its own (relative to `base_dir`), and `split`
    lm_file's (train, val, test) record indices."""
    from kdforge.lm.align import vocab_map
    from kdforge.lm.cross_data import paired_rows
    from kdforge.lm.tokenizers import load_lm_tokenizer

    args = f"{where}.args"
    texts = [str(record[text_field]) for record in records]  # present in every record (check_pairable)
    teacher = load_lm_tokenizer(teacher_tokenizer, base_dir, f"{args}.teacher_tokenizer")
    student_bos, student_ids = specials(student, None, f"{args}.tokenizer")
    t_bos, teacher_ids = specials(teacher, teacher_bos, f"{args}.teacher_tokenizer")
    for key, tok in (("tokenizer", student), ("teacher_tokenizer", teacher)):
        if not hasattr(tok, "backend_tokenizer"):  # the offsets and token text come from the `tokenizers` object
            raise RecipeError(f"{args}.{key}: pairing needs a fast tokenizer (a tokenizer.json in the folder) for "
                              "its character offsets; save the tokenizer with transformers' fast class.")
    s_backend, t_backend = student.backend_tokenizer, teacher.backend_tokenizer
    rows = paired_rows(texts, s_backend, t_backend, seq_len, teacher_seq_len, student_bos=student_bos,
                       teacher_bos=t_bos, where=args, student_specials=student_ids, teacher_specials=teacher_ids)
    cut = sum(int(n) < len(text.encode("utf-8")) for n, text in zip(rows.tensors["text_bytes"], texts, strict=True))
    if cut:
        logger.info("%s: %d of %d texts do not fit seq_len=%d / teacher_seq_len=%s on both sides and are cut at "
                    "a shared span end", where, cut, len(texts), seq_len, teacher_seq_len or seq_len)
    train, val, test = split
    for name, part in (("train", train), ("test", test)):
        if not len(part):
            raise RecipeError(f"{args}: no {name} row ({len(records)} records, test_size {test_size}); give more "
                              "records.")
    bundle = shared_rows_bundle(DataInfo((seq_len,), len(student)), rows, train, val, test)
    bundle.vocab_map = vocab_map(s_backend, t_backend)  # span_kl / span_hybrid compare the shared tokens through it
    return bundle


__all__ = ["check_pairable", "paired_bundle", "specials"]
