"""Paired rows for cross-tokenizer distillation: one text, the student's and the teacher's tokens, and their alignment.

Each sample's text is encoded by both tokenizers; `kdforge.lm.align` groups the tokens into the smallest spans
on which both agree and checks every span. The rows carry both sides and the alignment, so the alignment
travels with the batch (and with the sample through splits, caches and shuffles):

    input_ids, attention_mask, labels, mask          the student's causal-LM rows (`kdforge.lm.rows.lm_rows`)
    teacher_input_ids, teacher_attention_mask,
    teacher_labels, teacher_mask                     the teacher's rows, in its own vocabulary
    student_span  (N, L)   int64  span id of each student token; -1 for BOS, EOS, padding
    teacher_span  (N, Lt)  int64  span id of each teacher token; -1 likewise
    text_bytes    (N,)     int64  UTF-8 bytes of the text the rows cover (bits per byte)

The teacher model reads its own keys through a mapping in the recipe:
`teacher.inputs: {input_ids: teacher_input_ids, attention_mask: teacher_attention_mask}`.
A text longer than a row is cut at the end of the last span that fits on both sides (then no EOS follows).
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdforge.lm.align import NO_SPAN, AlignmentError, align, normalizer_of, side_of, token_surfaces
from kdforge.lm.rows import BOS, EOS, PAD, lm_rows
from kdforge.types import TensorData

TEACHER_KEYS = {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask",
                "labels": "teacher_labels", "mask": "teacher_mask"}
ALIGNMENT_KEYS = ("student_span", "teacher_span")


def _cut(n_tokens: int, span: list[int], budget: int) -> tuple[int, int]:
    """(tokens kept, spans kept) so that at most `budget` tokens remain, cutting only between whole spans."""
    if n_tokens <= budget:
        return n_tokens, max(span, default=NO_SPAN) + 1
    last_span = max([k for k in span[:budget + 1] if k != NO_SPAN], default=0)  # span cut through at the budget
    kept = next(i for i, k in enumerate(span) if k >= last_span)
    return kept, last_span


def check_row_lengths(seq_len: int, teacher_seq_len: int | None = None, student_bos: bool = True,
                      teacher_bos: bool = True, where: str = "data") -> None:
    """Refuse rows too short to hold any text beside BOS and EOS, naming the side's own field under `where`
    (`seq_len` for the student's rows, `teacher_seq_len` for the teacher's, which defaults to seq_len)."""
    sides = (("seq_len", seq_len, student_bos, "the student's"),
             ("teacher_seq_len" if teacher_seq_len else "seq_len", teacher_seq_len or seq_len, teacher_bos,
              "the teacher's"))
    for key, length, bos, whose in sides:
        if length - int(bos) - 1 < 1:
            raise AlignmentError(f"{where}.{key}: {whose} rows of {length} tokens leave no room for text beside "
                                 f"{'BOS and ' if bos else ''}EOS; set {where}.{key} to {int(bos) + 2} or more.")


def paired_rows(texts: list[str], student_tokenizer, teacher_tokenizer, seq_len: int = 48,
                teacher_seq_len: int | None = None, student_bos: bool = True, teacher_bos: bool = True,
                where: str = "data", student_specials: tuple[int, int, int] = (BOS, EOS, PAD),
                teacher_specials: tuple[int, int, int] = (BOS, EOS, PAD)) -> TensorData:
    """Rows of both tokenizations of `texts` and their alignment (module docstring); errors name `where`.
    `*_specials`: that side's (BOS, EOS, PAD) ids, for tokenizers that do not keep kdforge's ids 1, 2, 0."""
    check_row_lengths(seq_len, teacher_seq_len, student_bos, teacher_bos, where)  # once, before any text
    t_len = teacher_seq_len or seq_len
    s_budget, t_budget = seq_len - int(student_bos) - 1, t_len - int(teacher_bos) - 1
    # errors name the field of the tokenizer whose token text cannot be read
    s_surf = token_surfaces(student_tokenizer, f"{where}.tokenizer")
    t_surf = token_surfaces(teacher_tokenizer, f"{where}.teacher_tokenizer")
    s_norm, t_norm = normalizer_of(student_tokenizer), normalizer_of(teacher_tokenizer)
    s_rows, t_rows, s_spans, t_spans, n_bytes = [], [], [], [], []
    for i, text in enumerate(texts):
        s_side, t_side = side_of(student_tokenizer, s_surf, text), side_of(teacher_tokenizer, t_surf, text)
        found = align(text, s_side, t_side, where=f"{where}: sample {i}", normalize_student=s_norm,
                      normalize_teacher=t_norm)
        s_keep, s_nspan = _cut(len(s_side.ids), found.student_span, s_budget)
        t_keep, t_nspan = _cut(len(t_side.ids), found.teacher_span, t_budget)
        spans = min(s_nspan, t_nspan)
        s_keep = min(s_keep, next((j for j, k in enumerate(found.student_span) if k >= spans), s_keep))
        t_keep = min(t_keep, next((j for j, k in enumerate(found.teacher_span) if k >= spans), t_keep))
        whole = spans == len(found.spans)
        end = len(text) if whole else found.spans[spans - 1][1] if spans else 0
        n_bytes.append(len(text[:end].encode("utf-8")))
        s_rows.append([student_specials[0]] * student_bos + s_side.ids[:s_keep] + [student_specials[1]] * whole)
        t_rows.append([teacher_specials[0]] * teacher_bos + t_side.ids[:t_keep] + [teacher_specials[1]] * whole)
        s_spans.append([NO_SPAN] * student_bos + found.student_span[:s_keep] + [NO_SPAN] * whole)
        t_spans.append([NO_SPAN] * teacher_bos + found.teacher_span[:t_keep] + [NO_SPAN] * whole)
    student = _rows(s_rows, s_spans, seq_len, student_specials[2])
    teacher = _rows(t_rows, t_spans, t_len, teacher_specials[2])
    tensors = {**{k: student[k] for k in TEACHER_KEYS}, **{TEACHER_KEYS[k]: teacher[k] for k in TEACHER_KEYS},
               "student_span": student["span"], "teacher_span": teacher["span"],
               "text_bytes": torch.tensor(n_bytes, dtype=torch.long)}
    return TensorData(tensors, name=where)


def _rows(rows: list[list[int]], spans: list[list[int]], width: int, pad: int = PAD) -> dict[str, Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    span = torch.full((len(rows), width), NO_SPAN, dtype=torch.long)
    for i, (row, s) in enumerate(zip(rows, spans, strict=True)):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        span[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    out = dict(lm_rows(ids, torch.tensor([len(r) for r in rows])).tensors)
    out["span"] = span
    return out


def teacher_view(data: TensorData) -> TensorData:
    """The teacher's rows under the plain names (input_ids, attention_mask, labels, mask, index, text_bytes):
    for training or evaluating the teacher alone on its own tokens."""
    tensors = {plain: data.tensors[key] for plain, key in TEACHER_KEYS.items()}
    for key in ("index", "text_bytes"):
        if key in data.tensors:
            tensors[key] = data.tensors[key]
    return TensorData(tensors, name=f"{data.name} (teacher tokens)")


def is_paired(data: TensorData) -> bool:
    """Do these rows pair a student's and a teacher's tokenization (`paired_rows`)?"""
    return all(key in data.tensors for key in (*ALIGNMENT_KEYS, *TEACHER_KEYS.values()))


def check_alignment_rows(student_span: Tensor, teacher_span: Tensor, where: str = "alignment") -> None:
    """Cheap per-batch check that the two sides of each row belong together: the same number of spans on both
    sides (rows from different samples, or one side re-tokenized, almost never agree)."""
    s_count, t_count = student_span.max(-1).values, teacher_span.max(-1).values
    bad = (s_count != t_count).nonzero().flatten()
    if len(bad):
        row = int(bad[0])
        raise AlignmentError(
            f"{where}: row {row} has {int(s_count[row]) + 1} student spans but {int(t_count[row]) + 1} teacher spans; "
            "the rows' two sides do not come from one paired sample. Build the rows with "
            "kdforge.lm.cross_data.paired_rows (data.args.teacher_tokenizer) and do not reorder one side.")
