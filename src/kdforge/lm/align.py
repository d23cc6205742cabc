"""Aligning two tokenizations of one text by character offsets: the basis of cross-tokenizer distillation.

Two tokenizers cut the same text at different places ("unbelievable" is one teacher token and three student
tokens). Both tokenizers report, for every token, the characters it covers (its offset mapping). A character
position is a *cut* of one side when no token of that side straddles it; the positions that are cuts of both
sides split the text into the smallest spans on which both sides agree: each span is covered by whole tokens
of the student and whole tokens of the teacher. At the last token of a span both models predict the same
thing, the start of the next span's text, so their next-token distributions can be compared there.

Robust by construction:

* tokens that cover no character (BOS, EOS, padding, chat-template tokens outside the shared content) get span
  -1 on their own side only, so a BOS that only one tokenizer prepends shifts nothing;
* tokens of byte-level tokenizers that share one character (the two bytes of "é") fall in the same span;
* whitespace that one side drops (WordPiece) and the other keeps (byte-level BPE) joins the neighbouring span;
* every span is checked: the bytes of its tokens on each side must spell the span's text (whitespace and the
  tokenizer's own normalisation aside), so offsets shifted by one character or a text changed on one side
  raise `AlignmentError` naming the sample and the span, instead of training on misaligned pairs.

The alignment of a sample is two arrays, one span id per token on each side (`student_span`, `teacher_span`),
stored as data rows beside the token ids (`kdforge.lm.cross_data`).
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from kdforge.errors import KDForgeError

NO_SPAN = -1  # the span id of a token that covers no character of the shared text


class AlignmentError(KDForgeError, ValueError):
    """The two tokenizations do not describe the same text (offsets shifted, text changed on one side)."""


@dataclass(frozen=True)
class Side:
    """One tokenizer's view of the shared text.

    Args:
        ids: Token ids.
        offsets: (start, end) characters of each token in the string that was encoded.
        surfaces: Each token's text as bytes (`token_surfaces`), None for special tokens (no characters).
        content_start: Where the shared text starts in the encoded string (a chat template before it: > 0).
        unk_id: The tokenizer's unknown token, whose bytes are not the text's (its span is not spelt out).
    """

    ids: list[int]
    offsets: list[tuple[int, int]]
    surfaces: list[bytes | None]
    content_start: int = 0
    unk_id: int | None = None

    def __post_init__(self) -> None:
        if not len(self.ids) == len(self.offsets) == len(self.surfaces):
            raise AlignmentError(f"Side: {len(self.ids)} ids, {len(self.offsets)} offsets and "
                                 f"{len(self.surfaces)} surfaces; give one of each per token.")


@dataclass
class Alignment:
    """Span id per token on each side (NO_SPAN: covers no character) and the spans' character ranges."""

    student_span: list[int]
    teacher_span: list[int]
    spans: list[tuple[int, int]] = field(default_factory=list)


def _ranges(side: Side, length: int, who: str, where: str) -> list[tuple[int, int] | None]:
    """Each token's range in the shared text, None for tokens that cover none of it; checks order and bounds."""
    out: list[tuple[int, int] | None] = []
    previous: tuple[int, int] | None = None
    previous_i = 0
    for i, ((start, end), surface) in enumerate(zip(side.offsets, side.surfaces, strict=True)):
        start, end = start - side.content_start, end - side.content_start
        special = surface is None and side.ids[i] != side.unk_id  # an unknown token still covers characters
        if special or start == end or end <= 0 or start >= length:
            out.append(None)  # special, empty, or a template token outside the shared text
            continue
        if start < 0 or end > length:
            raise AlignmentError(f"{where}: {who} token {i} covers characters {start}..{end}, across the edge of the "
                                 f"shared text (0..{length}); a chat template must not merge into the content.")
        if previous is not None and start < previous[1] and (start, end) != previous:
            marker = side.surfaces[previous_i]
            if marker is not None and not marker.strip():  # a space marker prepended to the text (metaspace's
                out[previous_i] = None  # '▁' is reported at character 0): it covers no character of its own
            elif surface is not None and not surface.strip():
                out.append(None)
                continue
            else:
                raise AlignmentError(f"{where}: {who} token {i} covers characters {start}..{end}, overlapping the "
                                 f"previous token ({previous[0]}..{previous[1]}); the offsets are not in order.")
        previous, previous_i = (start, end), i  # byte-level tokens of one character share its range: allowed
        out.append(previous)
    return out


def _cuts(ranges: list[tuple[int, int] | None], length: int) -> set[int]:
    """Character positions no token straddles."""
    inside = [False] * (length + 1)
    for r in ranges:
        if r is not None:
            for c in range(r[0] + 1, r[1]):
                inside[c] = True
    return {c for c in range(length + 1) if not inside[c]}


def _assign(ranges: list[tuple[int, int] | None], bounds: list[int]) -> list[int]:
    """The piece id of each token: the piece its first character falls in."""
    return [NO_SPAN if r is None else bisect.bisect_right(bounds, r[0]) - 1 for r in ranges]


def _squash(text: str) -> str:
    return "".join(text.split())


def align(text: str, student: Side, teacher: Side, where: str = "alignment",
          normalize_student=None, normalize_teacher=None) -> Alignment:
    """The smallest spans on which both tokenizations of `text` agree (module docstring), checked span by span.

    `normalize_*`: the tokenizer's text normaliser (lowercasing, accent stripping), applied to the span's text
    before it is compared with that side's token bytes. Raises `AlignmentError` on any disagreement.
    """
    length = len(text)
    s_ranges = _ranges(student, length, "student", where)
    t_ranges = _ranges(teacher, length, "teacher", where)
    bounds = sorted(_cuts(s_ranges, length) & _cuts(t_ranges, length) - {length})
    s_piece, t_piece = _assign(s_ranges, bounds), _assign(t_ranges, bounds)
    has_s, has_t = set(s_piece) - {NO_SPAN}, set(t_piece) - {NO_SPAN}
    # pieces between common cuts; a piece with tokens on one side only (whitespace one tokenizer drops) joins
    # the span before it (or, at the start, the one after it)
    span_of_piece: dict[int, int] = {}
    starts: list[int] = []
    complete: list[bool] = []
    for k in range(len(bounds)):
        if k not in has_s and k not in has_t:
            continue
        both = k in has_s and k in has_t
        if starts and (not both or not complete[-1]):
            complete[-1] = complete[-1] or both
        else:
            starts.append(k)
            complete.append(both)
        span_of_piece[k] = len(starts) - 1
    s_span = [span_of_piece[k] if k != NO_SPAN else NO_SPAN for k in s_piece]
    t_span = [span_of_piece[k] if k != NO_SPAN else NO_SPAN for k in t_piece]
    begin = [bounds[k] for k in starts]
    spans = list(zip(begin, [*begin[1:], length], strict=True))
    _check_spelling(text, spans, s_span, student, "student", where, normalize_student)
    _check_spelling(text, spans, t_span, teacher, "teacher", where, normalize_teacher)
    return Alignment(s_span, t_span, spans)


def _check_spelling(text: str, spans: list[tuple[int, int]], span_of: list[int], side: Side, who: str,
                    where: str, normalize) -> None:
    """Each span's tokens on this side spell the span's text (whitespace ignored); else AlignmentError."""
    pieces: list[list[int]] = [[] for _ in spans]
    for i, k in enumerate(span_of):
        if k != NO_SPAN:
            pieces[k].append(i)
    for k, (start, end) in enumerate(spans):
        if any(side.ids[i] == side.unk_id for i in pieces[k]):
            continue  # an unknown token's bytes are not the text's
        spelt = b"".join(side.surfaces[i] or b"" for i in pieces[k]).decode("utf-8", errors="replace")
        expected = text[start:end] if normalize is None else normalize(text[start:end])
        if _squash(spelt) != _squash(expected):
            raise AlignmentError(
                f"{where}: the {who} tokens of span {k} (characters {start}..{end}, {text[start:end]!r}) spell "
                f"{spelt!r}. The {who} offsets do not match the text (shifted, or a different text was encoded); "
                "encode the same text with both tokenizers and keep their offset mappings.")


# ---- tokenizers (`tokenizers` library): each token's bytes -------------------------------------------------


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable stand-in character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def marker_convention(tokenizer, where: str = "tokenizer") -> str:
    """How the tokenizer marks spaces in its tokens: 'byte_level' (Ġ), 'metaspace' (▁; also SentencePiece
    tokenizers converted with a '▁' -> ' ' Replace decoder and byte fallback, as Llama 2, Mistral, Gemma),
    'wordpiece' (##)."""
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    steps = [decoder, *decoder.get("decoders", [])]
    kinds = {d.get("type") for d in steps}
    for kind, name in (("ByteLevel", "byte_level"), ("Metaspace", "metaspace"), ("WordPiece", "wordpiece")):
        if kind in kinds:
            return name
    if any(d.get("type") == "Replace" and (d.get("pattern") or {}).get("String") == "▁" and d.get("content") == " "
           for d in steps):  # SentencePiece converted (Llama 2, Mistral, Gemma): '▁' replaced by a space
        return "metaspace"
    raise AlignmentError(f"{where}: decoder {decoder.get('type')!r} is not one of ByteLevel, Metaspace, "
                         "WordPiece or a '▁' -> ' ' Replace, so its tokens' text cannot be read; use a tokenizer "
                         "with one of these.")


def token_surfaces(tokenizer, where: str = "tokenizer") -> list[bytes | None]:
    """Per id, the text a token stands for, as UTF-8 bytes with spaces as b' ' (None: special tokens).

    Space markers are normalised: byte-level 'Ġthe' and metaspace '▁the' are both b' the' (a byte-fallback
    token '<0xE6>' is that one byte); a WordPiece continuation '##ing' is b'ing' and a word-initial WordPiece
    token 'the' is b' the' (WordPiece drops the space itself; words follow a space except at the start of a
    text)."""
    convention = marker_convention(tokenizer, where)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    table: list[bytes | None] = [None] * tokenizer.get_vocab_size()
    decoder = _byte_decoder() if convention == "byte_level" else {}
    for token, i in tokenizer.get_vocab().items():
        if token in special:
            continue
        if i >= len(table):
            raise AlignmentError(f"{where}: token {token!r} has id {i} beyond the vocabulary size {len(table)}.")
        if convention == "byte_level":
            table[i] = bytes(decoder.get(c, ord("?")) for c in token)
        elif convention == "metaspace":
            fallback = _BYTE_TOKEN.fullmatch(token)  # byte fallback: '<0xE6>' stands for that one byte
            table[i] = bytes([int(fallback[1], 16)]) if fallback else token.replace("▁", " ").encode()
        else:
            table[i] = token[2:].encode() if token.startswith("##") else b" " + token.encode()
    return table


def side_of(tokenizer, surfaces: list[bytes | None], text: str, content_start: int = 0) -> Side:
    """Encode `text` (without the tokenizer's own special tokens) into a `Side`."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    unk = next((i for name in ("[UNK]", "<unk>") if (i := tokenizer.token_to_id(name)) is not None), None)
    return Side(list(encoding.ids), [tuple(o) for o in encoding.offsets], [surfaces[i] for i in encoding.ids],
                content_start, unk)


def normalizer_of(tokenizer):
    """The tokenizer's text normaliser as a function (None when it has none)."""
    normalizer = tokenizer.normalizer
    if normalizer is None:
        return None
    if marker_convention(tokenizer) == "metaspace":  # a normaliser that writes '▁' for spaces (SentencePiece
        return lambda text: normalizer.normalize_str(text).replace("▁", " ")  # converted): as the surfaces do
    return normalizer.normalize_str


def vocab_map(student_tokenizer, teacher_tokenizer) -> Tensor:
    """(teacher vocabulary,) int64: the student id of the token spelt the same, -1 where none is. Token text is
    compared after normalising space markers (`kdforge.lm.align.token_surfaces`); special tokens match by name."""
    def keys(tokenizer) -> list[object]:
        surfaces = token_surfaces(tokenizer)
        names = {i: t.content for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        return [("special", names[i]) if i in names else surfaces[i] for i in range(len(surfaces))]

    student = {}
    for i, key in enumerate(keys(student_tokenizer)):
        if key is not None:
            student.setdefault(key, i)
    return torch.tensor([student.get(key, -1) if key is not None else -1 for key in keys(teacher_tokenizer)],
                        dtype=torch.long)
