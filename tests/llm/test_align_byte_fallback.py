"""SentencePiece tokenizers converted to `tokenizers` (Llama 2, Mistral, Gemma): a normaliser that writes '▁' for
spaces, a '▁' -> ' ' Replace decoder and byte-fallback tokens '<0xHH>' for characters outside the vocabulary.
Their rows pair with another tokenizer's by character offsets like any other."""

import json

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, trainers

from kdforge.data.corpus import stdlib_sentences
from kdforge.data.lm_tokenizers import train_lm_tokenizer
from kdforge.lm.align import AlignmentError, marker_convention, side_of, token_surfaces, vocab_map
from kdforge.lm.cross_data import paired_rows

ODD = ["Hello world, naïve 東京 test", "  two  spaces here", "émigré café", "tab\tand\nnewline"]


def sentencepiece_like(texts: list[str], vocab_size: int = 600, decoder: bool = True) -> Tokenizer:
    """A BPE model laid out as Llama 2's converted tokenizer.json: '▁' prepended and for spaces by the
    normaliser, <unk>/<s>/</s>, and the 256 byte tokens as ordinary vocabulary entries."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    if decoder:
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size,
                                                       special_tokens=["<unk>", "<s>", "</s>"]))
    state = json.loads(tok.to_str())
    for b in range(256):
        state["model"]["vocab"].setdefault(f"<0x{b:02X}>", len(state["model"]["vocab"]))
    return Tokenizer.from_str(json.dumps(state))


@pytest.fixture(scope="module")
def texts():
    return stdlib_sentences(limit=300, seed=0)


def test_byte_tokens_stand_for_their_byte_and_spaces_for_the_marker(texts):
    tok = sentencepiece_like(texts)
    assert marker_convention(tok) == "metaspace"
    surfaces = token_surfaces(tok)
    assert surfaces[tok.token_to_id("<0xE6>")] == b"\xe6"
    side = side_of(tok, surfaces, "東")  # not in the vocabulary: three byte tokens
    assert b"".join(side.surfaces).strip() == "東".encode()
    assert tok.token_to_id("<unk>") == side.unk_id


def test_rows_pair_with_a_wordpiece_student_across_odd_text(texts):
    teacher = sentencepiece_like(texts)
    student = train_lm_tokenizer(texts, "wordpiece", 300)
    student = getattr(student, "backend_tokenizer", student)
    rows = paired_rows(texts[:60] + ODD, student, teacher, seq_len=40)  # every span's spelling is checked
    assert rows.tensors["teacher_input_ids"].shape == (64, 40)
    spans = rows.tensors["teacher_span"][-3]  # "émigré café": accented letters through byte tokens
    assert int(spans.max()) >= 1
    assert int((vocab_map(student, teacher) >= 0).sum()) > 50


def test_a_tokenizer_without_a_readable_decoder_is_still_refused(texts):
    with pytest.raises(AlignmentError, match="decoder"):
        token_surfaces(sentencepiece_like(texts, decoder=False))


def test_paired_rows_name_the_field_of_a_tokenizer_they_cannot_read(texts):
    student = train_lm_tokenizer(texts, "wordpiece", 300)
    student = getattr(student, "backend_tokenizer", student)
    unreadable = sentencepiece_like(texts, decoder=False)
    with pytest.raises(AlignmentError, match=r"^recipe\.data\.args\.teacher_tokenizer: decoder"):
        paired_rows(texts[:5], student, unreadable, where="recipe.data.args")
    with pytest.raises(AlignmentError, match=r"^recipe\.data\.args\.tokenizer: decoder"):
        paired_rows(texts[:5], unreadable, student, where="recipe.data.args")
