"""Text data sources for recipes (kdforge.data.text): splits, labelled subsets, augmentation, masking, tags."""

import random
from collections import Counter

import numpy as np
import pytest
import torch

from kdforge.data import text as text_mod
from kdforge.data import text_source
from kdforge.data.augment import AugmentSpec, augment_sentences, augment_words
from kdforge.data.corpus import DocSentence
from kdforge.data.text import (
    CLS,
    MASK,
    PAD,
    SEP,
    TOPICS,
    name_tags,
    stdlib_mlm,
    stdlib_sentences,
    stdlib_tags,
    stdlib_topics,
    topic_records,
)
from kdforge.errors import RecipeError
from kdforge.recipe import DataSpec

SMALL = {"vocab_size": 800, "seq_len": 40}


@pytest.fixture(scope="module")
def topics():
    """The plain bundle, the tokenizer's training texts (spied), and the bundle with labels + augmentation."""
    seen: list[list[str]] = []
    original = text_mod.train_wordpiece

    def spy(texts, vocab_size=2000):
        seen.append(list(texts))
        return original(texts, vocab_size)

    text_mod.train_wordpiece = spy
    try:
        plain, tok = stdlib_topics(**SMALL)
    finally:
        text_mod.train_wordpiece = original
    spec = DataSpec(source="text:stdlib_topics", student_labels=80, args={**SMALL, "augment": {"copies": 2}})
    return plain, tok, seen[0], text_source(spec)


def _texts(rows):
    records, _ = topic_records()
    return {records[i].text for i in rows.tensors["index"].tolist()}


def test_wordpiece_is_deterministic():
    texts = [r.text for r in topic_records()[0][:400]]
    first, second = text_mod.train_wordpiece(texts, 600), text_mod.train_wordpiece(texts, 600)
    assert first.get_vocab() == second.get_vocab()  # the trainer alone breaks ties by hash order


def test_topics_split_sizes_and_stratification(topics):
    plain, _, _, _ = topics
    _, labels = topic_records()
    n = len(labels)
    assert len(plain.teacher_train) + len(plain.val) + len(plain.test) == n
    assert len(plain.test) == pytest.approx(0.2 * n, abs=2) and len(plain.val) == pytest.approx(0.1 * n, abs=2)
    ids = [set(part.tensors["index"].tolist()) for part in (plain.teacher_train, plain.val, plain.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    overall = np.bincount(labels, minlength=len(TOPICS)) / n
    assert overall.min() > 0.04  # every area has hundreds of sentences
    for part in (plain.teacher_train, plain.test):
        share = np.bincount(part.tensors["labels"].numpy(), minlength=len(TOPICS)) / len(part)
        assert np.abs(share - overall).max() < 0.01
    assert plain.info.num_classes == len(TOPICS) and plain.info.input_shape == (40,)
    assert plain.teacher_train.tensors["input_ids"][:, 0].eq(CLS).all()


def test_tokenizer_sees_only_training_sentences(topics):
    plain, tok, trained_on, _ = topics
    assert set(trained_on) == _texts(plain.teacher_train)
    assert not set(trained_on) & (_texts(plain.val) | _texts(plain.test))
    assert tok.backend.get_vocab_size() == 800
    assert [tok.backend.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_student_labels_with_transfer_set_and_augmentation(topics):
    plain, _, _, bundle = topics
    assert torch.equal(bundle.teacher_train.tensors["input_ids"], plain.teacher_train.tensors["input_ids"])
    n_train = len(plain.teacher_train)
    student = bundle.student_train.tensors
    assert len(bundle.student_train) == 3 * n_train  # the training rows + 2 augmented copies of each
    labelled = student["labels"] != -100
    assert labelled.sum() == 80 and not labelled[n_train:].any()
    assert torch.equal(student["labels"][:n_train][labelled[:n_train]], bundle.scratch_train.tensors["labels"])
    counts = np.bincount(bundle.scratch_train.tensors["labels"].numpy(), minlength=len(TOPICS))
    expected = np.bincount(plain.teacher_train.tensors["labels"].numpy()) / n_train * 80
    assert np.abs(counts - expected).max() <= 1  # stratified
    assert len(set(student["index"].tolist())) == len(bundle.student_train)  # fresh ids for augmented rows
    assert (student["input_ids"][n_train:] == MASK).any()
    assert len(bundle.scratch_train) == 80


def test_student_labels_without_transfer_set():
    spec = DataSpec(source="text:stdlib_topics", student_labels=40, transfer_set=False, args=SMALL)
    bundle = text_source(spec)
    assert len(bundle.student_train) == len(bundle.scratch_train) == 40
    assert (bundle.student_train.tensors["labels"] != -100).all()


def test_augmentation_rates_and_ngram_lengths():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]
    masked = [augment_words(words, "[MASK]", AugmentSpec(p_mask=0.1, p_ngram=0.0), rng) for _ in range(2000)]
    rate = sum(w == "[MASK]" for row in masked for w in row) / (30 * 2000)
    assert rate == pytest.approx(0.1, abs=0.005)
    grams = [augment_words(words, "[MASK]", AugmentSpec(p_mask=0.0, p_ngram=1.0, max_ngram=3), rng)
             for _ in range(600)]
    assert Counter(len(g) for g in grams).keys() == {1, 2, 3}
    assert all(" ".join(g) in " ".join(words) for g in grams)  # contiguous n-grams of the sentence
    kept = [augment_words(words, "[MASK]", AugmentSpec(p_mask=0.0, p_ngram=0.25), rng) for _ in range(2000)]
    assert sum(len(k) < 30 for k in kept) / 2000 == pytest.approx(0.25, abs=0.03)
    spec = AugmentSpec(copies=3, seed=1)
    out = augment_sentences(["a b c d e f", "g h i j k l"], "[MASK]", spec)
    assert len(out) == 6 and out == augment_sentences(["a b c d e f", "g h i j k l"], "[MASK]", spec)


def test_static_mlm_masking():
    bundle, tok = stdlib_mlm(limit=600, dupe_factor=3, **SMALL)
    assert bundle.info.num_classes == tok.vocab_size == 800
    train = bundle.teacher_train.tensors
    n_train = len(train["index"]) // 3
    assert len(set(train["index"].tolist())) == 3 * n_train
    labels, chosen, ids = train["labels"], train["mask"], train["input_ids"]
    assert torch.equal(chosen, labels != -100)
    candidates = train["attention_mask"].bool() & (labels != CLS) & (labels != SEP)
    real = train["attention_mask"].bool().sum() - 2 * len(ids)  # [CLS] and [SEP] are never chosen
    assert chosen.sum() / real == pytest.approx(0.15, abs=0.015)
    assert not (chosen & ~candidates).any()
    assert (ids[chosen] == MASK).float().mean() == pytest.approx(0.8, abs=0.04)
    assert (ids[chosen] == labels[chosen]).float().mean() == pytest.approx(0.1 + 0.1 / 800, abs=0.03)
    first, second = chosen[:n_train], chosen[n_train:2 * n_train]
    assert not torch.equal(first, second)  # different masks per copy
    again, _ = stdlib_mlm(limit=600, dupe_factor=1, **SMALL)
    assert torch.equal(again.test.tensors["input_ids"], bundle.test.tensors["input_ids"])  # fixed held-out mask


def test_token_tags_sit_on_first_word_pieces():
    record = DocSentence("Return the number of items in the queue.", "asyncio.queues", "Queue.qsize")
    assert name_tags(record) == [0, 0, 0, 0, 0, 0, 0, 1]
    bundle, tok = stdlib_tags(limit=300, **SMALL)
    data = bundle.teacher_train.tensors
    assert bundle.info.num_classes == 2 and torch.equal(data["mask"], data["labels"] != -100)
    records = text_mod.stdlib_documented_sentences()
    random.Random(0).shuffle(records)
    checked = 0
    for row in range(60):
        pieces = [tok.backend.id_to_token(i) for i in data["input_ids"][row].tolist()]
        if "[SEP]" not in pieces or pieces[-1] == "[SEP]":
            continue  # truncated: its last word may be cut
        words = records[int(data["index"][row])].text.split()
        starts = [i for i, m in enumerate(data["mask"][row].tolist()) if m] + [pieces.index("[SEP]")]
        assert len(starts) - 1 == len(words)  # one labelled position per word ...
        for word, begin, end in zip(words, starts, starts[1:], strict=False):  # ... on its first piece
            assert "".join(p.removeprefix("##") for p in pieces[begin:end]) == word.lower()
        assert data["labels"][row][starts[:-1]].tolist() == name_tags(records[int(data["index"][row])])
        checked += 1
    assert checked > 30
    assert data["labels"][data["input_ids"] == PAD].eq(-100).all()
    assert 0 < data["labels"][data["mask"]].float().mean() < 0.2


def test_unlabelled_sentences_have_no_labels():
    bundle, _ = stdlib_sentences(limit=200, **SMALL)
    assert "labels" not in bundle.teacher_train.tensors and "labels" not in bundle.test.tensors
    assert set(bundle.teacher_train.tensors) == {"input_ids", "attention_mask", "mask", "index"}
    assert len(bundle.teacher_train) + len(bundle.val) + len(bundle.test) == 200


def test_hf_tokenizer_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["the", "a", "of", "to", "is", "return", "and", "in", "for", "this", "##s", "file", "name"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *words]
    reference = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    assert reference("the file")["input_ids"] == [2, 7, 18, 3]  # real words, not [UNK]
    reference.save_pretrained(tmp_path / "tok")
    spec = DataSpec(source="text:stdlib_sentences", args={"tokenizer": "hf:tok", "limit": 50, "seq_len": 24})
    bundle = text_source(spec, base_dir=tmp_path)  # the folder is found relative to the recipe's folder
    sentences = [s for s in text_mod.stdlib_documented_sentences()]
    random.Random(0).shuffle(sentences)
    first = bundle.teacher_train.tensors
    expected = reference([sentences[int(first["index"][0])].text], padding="max_length", truncation=True,
                         max_length=24)["input_ids"][0]
    assert first["input_ids"][0].tolist() == expected
    with pytest.raises(RecipeError, match="recipe.data.args.vocab_size"):
        text_source(DataSpec(source="text:stdlib_sentences", args={"tokenizer": "hf:tok", "vocab_size": 10}),
                    base_dir=tmp_path, where="recipe.data")


@pytest.mark.parametrize(("args", "extra", "match"), [
    ({"vocab_sise": 100}, {}, r"recipe.data.args: .*'vocab_sise'.*Did you mean 'vocab_size'.*Valid arguments"),
    ({"augment": {"copy": 2}}, {}, r"recipe.data.args.augment: unknown keys \['copy'\]"),
    ({"augment": {"p_mask": 1.5}}, {}, r"recipe.data.args.augment.p_mask"),
    ({"tokenizer": "sentencepiece"}, {}, r"recipe.data.args.tokenizer: unknown tokenizer"),
    ({"seed": 3}, {}, r"recipe.data.args: .*'seed'"),
])
def test_bad_topic_args_name_the_field(args, extra, match):
    with pytest.raises(RecipeError, match=match):
        text_source(DataSpec(source="text:stdlib_topics", args={**SMALL, **args}, **extra), where="recipe.data")


def test_sources_without_labels_reject_student_labels():
    with pytest.raises(RecipeError, match="recipe.data.student_labels"):
        text_source(DataSpec(source="text:stdlib_mlm", student_labels=10), where="recipe.data")


def test_stdlib_wordpiece_gives_the_same_ids_in_every_source_and_mlm_can_exclude_the_topics():
    mlm, mlm_tok = text_mod.stdlib_mlm(tokenizer="stdlib_wordpiece", vocab_size=500, seq_len=16, limit=200,
                                       dupe_factor=1, exclude_topics=True)
    topics, topics_tok = text_mod.stdlib_topics(tokenizer="stdlib_wordpiece", vocab_size=500, seq_len=16)
    assert mlm_tok.backend.get_vocab() == topics_tok.backend.get_vocab()
    pretraining = set(text_mod.outside_topics())
    records, _ = text_mod.topic_records()
    assert pretraining and not pretraining & {r.text for r in records}
