"""Cross-tokenizer alignment (kdforge.lm.align): hand-written tokenizations, planted misalignments, and the
paired rows built from real tokenizers of three families."""

import pytest
import torch

from kdforge.lm.align import NO_SPAN, AlignmentError, Side, align, token_surfaces, vocab_map
from kdforge.lm.cross_data import check_alignment_rows, paired_rows, teacher_view


def side(text: str, pieces: list[str | None], content_start: int = 0, specials: int = 0) -> Side:
    """A Side from the pieces as they appear in `text` (None: a special token covering nothing; leading
    special tokens first). Offsets are found left to right, so pieces must occur in order."""
    offsets, surfaces, at = [], [], 0
    for piece in pieces:
        if piece is None:
            offsets.append((0, 0))
            surfaces.append(None)
            continue
        start = text.index(piece.strip() or piece, at) - (len(piece) - len(piece.lstrip()))
        start = max(start, at)
        end = start + len(piece)
        offsets.append((start + content_start, end + content_start))
        surfaces.append(piece.encode())
        at = end
    return Side(list(range(len(pieces))), offsets, surfaces)


def spans_text(text, found):
    return [text[a:b] for a, b in found.spans]


def test_merged_and_split_words_group_into_the_smallest_common_spans():
    text = "unbelievable results"
    student = side(text, ["un", "believ", "able", " res", "ults"])
    teacher = side(text, ["unbeliev", "able", " results"])
    found = align(text, student, teacher)
    assert spans_text(text, found) == ["unbeliev", "able", " results"]
    assert found.student_span == [0, 0, 1, 2, 2]
    assert found.teacher_span == [0, 1, 2]


def test_a_bos_on_one_side_only_shifts_nothing():
    text = "Return the value."
    pieces = ["Return", " the", " value", "."]
    plain = align(text, side(text, pieces), side(text, ["Ret", "urn", " the", " val", "ue", "."]))
    with_bos = align(text, side(text, pieces), side(text, [None, "Ret", "urn", " the", " val", "ue", "."]))
    assert with_bos.spans == plain.spans
    assert with_bos.teacher_span == [NO_SPAN, *plain.teacher_span]
    assert with_bos.student_span == plain.student_span
    eos = align(text, side(text, [*pieces, None]), side(text, [None, "Ret", "urn", " the", " val", "ue", ".", None]))
    assert eos.student_span[-1] == NO_SPAN and eos.teacher_span[-1] == NO_SPAN and eos.spans == plain.spans


def test_whitespace_dropped_by_one_side_joins_a_neighbouring_span():
    text = "a  b "
    # WordPiece drops spaces; byte-level BPE keeps each one (the last one trails the text)
    wordpiece = Side([0, 1], [(0, 1), (3, 4)], [b"a", b"b"])
    byte_level = Side([0, 1, 2, 3], [(0, 1), (1, 2), (2, 4), (4, 5)], [b"a", b" ", b" b", b" "])
    found = align(text, wordpiece, byte_level)
    assert spans_text(text, found) == ["a ", " b "]
    assert found.student_span == [0, 1] and found.teacher_span == [0, 0, 1, 1]


def test_unicode_bytes_split_across_tokens_stay_in_one_span():
    text = "héllo ✓"
    e_bytes, check = "é".encode(), "✓".encode()
    # byte-level: 'é' is two tokens that share its one character; '✓' three tokens
    teacher = Side(list(range(7)), [(0, 1), (1, 2), (1, 2), (2, 5), (5, 6), (6, 7), (6, 7)],
                   [b"h", e_bytes[:1], e_bytes[1:], b"llo", b" ", check[:2], check[2:]])
    student = Side(list(range(3)), [(0, 5), (5, 6), (6, 7)], ["héllo".encode(), b" ", check])
    found = align(text, student, teacher)
    assert spans_text(text, found) == ["héllo", " ", "✓"]
    assert found.teacher_span == [0, 0, 0, 0, 1, 2, 2]


def test_a_chat_template_on_one_side_maps_to_no_characters():
    text = "Hi there"
    template = "<|user|>\nHi there<|end|>"
    start = template.index(text)
    teacher = Side([9, 1, 2, 8], [(0, 8), (start, start + 2), (start + 2, start + 8), (start + 8, len(template))],
                   [b"<|user|>\n", b"Hi", b" there", b"<|end|>"], content_start=start)
    student = Side([1, 2, 3], [(0, 1), (1, 2), (2, 8)], [b"H", b"i", b" there"])
    found = align(text, student, teacher)
    assert found.teacher_span == [NO_SPAN, 0, 1, NO_SPAN]
    assert spans_text(text, found) == ["Hi", " there"]


def test_offsets_shifted_by_one_character_are_caught():
    text = "Return the value."
    good = side(text, ["Return", " the", " value", "."])
    shifted = Side(good.ids, [(a + 1, min(b + 1, len(text))) for a, b in good.offsets], good.surfaces)
    with pytest.raises(AlignmentError, match="sample 7: the student tokens of span 0 .* offsets do not match"):
        align(text, shifted, side(text, ["Ret", "urn", " the", " value", "."]), where="sample 7")


def test_a_text_changed_on_one_side_is_caught():
    text = "Return the value."
    other = "Return the valve."
    teacher = side(other, ["Return", " the", " valve", "."])
    with pytest.raises(AlignmentError, match=r"sample 3: the teacher tokens of span 2 .*' value'.* spell ' valve'"):
        align(text, side(text, ["Return", " the", " value", "."]), teacher, where="sample 3")


def test_overlapping_offsets_are_refused():
    text = "abcd"
    bad = Side([0, 1], [(0, 3), (2, 4)], [b"abc", b"cd"])
    with pytest.raises(AlignmentError, match="overlapping the previous token"):
        align(text, bad, Side([0], [(0, 4)], [b"abcd"]))


@pytest.fixture(scope="module")
def tokenizers():
    from kdforge.data.corpus import stdlib_sentences
    from kdforge.data.lm_tokenizers import train_lm_tokenizer

    texts = stdlib_sentences(limit=400, seed=0)
    return texts, {kind: train_lm_tokenizer(texts, kind, size)
                   for kind, size in (("bpe", 300), ("unigram", 350), ("wordpiece", 300))}


@pytest.mark.parametrize(("student", "teacher"), [("unigram", "bpe"), ("wordpiece", "bpe"), ("bpe", "unigram")])
def test_paired_rows_from_real_tokenizers(tokenizers, student, teacher):
    texts, toks = tokenizers
    texts = [*texts[:60], "  naïve café ✓ 日本語  ", "x"]
    rows = paired_rows(texts, toks[student], toks[teacher], seq_len=24, teacher_seq_len=20, teacher_bos=False)
    t = rows.tensors
    assert t["input_ids"].shape == (62, 24) and t["teacher_input_ids"].shape == (62, 20)
    check_alignment_rows(t["student_span"], t["teacher_span"])
    assert bool((t["student_span"][:, 0] == NO_SPAN).all())  # the student's BOS
    assert bool((t["teacher_span"][:, 0] == 0).all())  # no teacher BOS: its first token starts span 0
    # spans are numbered in order on both sides, and only real tokens carry one
    for key, mask in (("student_span", "attention_mask"), ("teacher_span", "teacher_attention_mask")):
        span = t[key]
        assert bool((span[t[mask] == 0] == NO_SPAN).all())
        kept = torch.where(span >= 0, span, -1).cummax(1).values
        assert bool(((span < 0) | (span == kept)).all())
    assert int(t["text_bytes"][-1]) == 1  # "x", whole
    assert 0 < int(t["text_bytes"][-2]) <= len("  naïve café ✓ 日本語  ".encode())  # cut at a span end if long
    view = teacher_view(rows)
    assert torch.equal(view.tensors["input_ids"], t["teacher_input_ids"])
    assert torch.equal(view.tensors["labels"], t["teacher_labels"])


def test_vocab_map_matches_tokens_spelt_the_same(tokenizers):
    _, toks = tokenizers
    mapping = vocab_map(toks["unigram"], toks["bpe"])
    bpe, uni = toks["bpe"], toks["unigram"]
    assert int(mapping[bpe.token_to_id("[EOS]")]) == uni.token_to_id("[EOS]")
    surfaces_t, surfaces_s = token_surfaces(bpe), token_surfaces(uni)
    mapped = (mapping >= 0).nonzero().flatten().tolist()
    assert len(mapped) > 50
    for j in mapped:
        if surfaces_t[j] is not None:
            assert surfaces_t[j] == surfaces_s[int(mapping[j])]
    if uni.token_to_id("▁the") is not None and bpe.token_to_id("Ġthe") is not None:
        assert int(mapping[bpe.token_to_id("Ġthe")]) == uni.token_to_id("▁the")


def test_rows_from_different_samples_are_caught():
    s = torch.tensor([[-1, 0, 1, 2, -1], [-1, 0, 1, -1, -1]])
    t = torch.tensor([[0, 1, -1, -1], [0, 1, 1, 2]])
    with pytest.raises(AlignmentError, match="row 0 has 3 student spans but 2 teacher spans"):
        check_alignment_rows(s, t)
