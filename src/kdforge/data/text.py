"""Text data sources for recipes (`data.source: text:<name>`): encoder tasks on the standard library's docstrings.

Every sentence comes from `kdforge.data.corpus` (read with `ast`, no download), so the runs work offline.

    text:stdlib_topics     sequence classification: which stdlib area a sentence documents (TOPICS)
                           input_ids, attention_mask (N, L) int64; labels (N,) int64; index (N,)
    text:stdlib_tags       token classification (see `name_tags`): labels (N, L) with -100 off the first
                           word piece of each word; mask (N, L) bool = labelled positions
    text:stdlib_mlm        masked-LM rows, statically masked (BERT's 15 % / 80-10-10): labels (N, L) = the
                           original id at chosen positions, -100 elsewhere; mask (N, L) bool = chosen positions
    text:stdlib_sentences  unlabelled sentences for sentence-embedding distillation: input_ids, attention_mask,
                           mask (the attention mask as bool, what token-level losses count), index; no labels

Every source takes a `tokenizer` argument, because a real Hugging Face teacher must see its own tokenizer's ids:
`wordpiece` (default: a BERT-style WordPiece trained in-process on the training split's sentences only, so
held-out text stays unseen), `hf:<local folder or hub name>` (transformers' AutoTokenizer) or
`py:package.module:attr` (a callable with no arguments that returns a `tokenizers.Tokenizer` or a
transformers tokenizer), or `stdlib_wordpiece`: one WordPiece trained on the docstring sentences outside the
TOPICS areas, the same in every source, so a model pre-trained on one source (a well-read student on
`text:stdlib_mlm` with `exclude_topics: true`) reads the same ids in another (`text:stdlib_topics`) and never saw
the task's sentences.

Every source takes `where` (filled in by `text_source`): the name its error messages give the data section, as in
`{where}.args.tokenizer`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kdforge.data import corpus
from kdforge.data.augment import AugmentSpec, augment_sentences
from kdforge.data.bundle import DataBundle, labelled_split, permutation_split, shared_rows_bundle, stratified_split
from kdforge.data.corpus import DocSentence, stdlib_documented_sentences
from kdforge.data.sources import TEXT_DATASETS
from kdforge.errors import RecipeError
from kdforge.imports import is_py_ref, resolve_py_ref
from kdforge.io import local_path
from kdforge.types import IGNORE_INDEX, DataInfo, TensorData

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)

# Label -> top-level stdlib packages. Chosen so each class has hundreds of sentences on CPython 3.11
# (tkinter 1007, email 641, asyncio 596, http+urllib 415, logging 391, importlib 356, xml 334, unittest 284);
# distutils (494) is left out because Python 3.12 removed it. Sentences from other modules are not used.
TOPICS: dict[str, tuple[str, ...]] = {
    "asyncio": ("asyncio",),
    "email": ("email",),
    "http": ("http", "urllib"),
    "importlib": ("importlib",),
    "logging": ("logging",),
    "tkinter": ("tkinter",),
    "unittest": ("unittest",),
    "xml": ("xml",),
}


def train_wordpiece(texts: Sequence[str], vocab_size: int = 2000):
    """A lower-casing BERT WordPiece `tokenizers.Tokenizer` trained on `texts`; ids 0-4 are [PAD] [UNK] [CLS]
    [SEP] [MASK], and encodings are `[CLS] ... [SEP]`. The same texts in the same order give the same vocab."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    # The trainer numbers characters in hash-map order and breaks ties between equally frequent merges by those
    # numbers, so the same texts could give different vocabularies. Listing every character (and its '##'
    # form) up front, sorted, as "special" tokens fixes their numbers; the model is rebuilt below with only the
    # real special tokens, so the characters become ordinary vocabulary entries.
    starts, inner = set(), set()
    for text in texts:
        normal = tokenizer.normalizer.normalize_str(text)
        for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normal):
            starts.add(word[0])
            inner.update(word[1:])
    alphabet = [*sorted(starts | inner), *(f"##{c}" for c in sorted(inner))]
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[*SPECIAL_TOKENS, *alphabet],
                                        show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    vocab = dict(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1]))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)])
    return tokenizer


class TextTokenizer:
    """One interface over a `tokenizers.Tokenizer` and a transformers tokenizer: fixed-length id rows, the word
    each token came from, and the special ids the sources need. `backend` is the wrapped tokenizer."""

    def __init__(self, backend: Any, where: str = "tokenizer") -> None:
        from tokenizers import Tokenizer

        self.backend = backend
        self.where = where
        self._raw = isinstance(backend, Tokenizer)
        if self._raw:
            added = backend.get_added_tokens_decoder()
            self.special_ids = sorted(i for i, tok in added.items() if tok.special)
            self.pad_id = backend.token_to_id("[PAD]")
            self.mask_token = "[MASK]" if backend.token_to_id("[MASK]") is not None else None
            self.vocab_size = backend.get_vocab_size()
        elif callable(backend) and hasattr(backend, "all_special_ids"):
            self.special_ids = sorted(set(backend.all_special_ids))
            self.pad_id = backend.pad_token_id
            self.mask_token = backend.mask_token
            self.vocab_size = len(backend)
        else:
            raise RecipeError(f"{where}: got {type(backend).__name__}; expected a tokenizers.Tokenizer or a "
                              "transformers tokenizer.")
        if self.pad_id is None:
            raise RecipeError(f"{where}: the tokenizer has no padding token; give it one ([PAD]).")

    def to_json(self) -> str | None:
        """The tokenizer as `tokenizer.json` text (what `tokenizers.Tokenizer.from_file` and
        `transformers.PreTrainedTokenizerFast(tokenizer_file=...)` load); None for a slow (Python) tokenizer."""
        from tokenizers import Tokenizer

        fast = self.backend if self._raw else getattr(self.backend, "backend_tokenizer", None)
        if fast is None:
            return None
        clean = Tokenizer.from_str(fast.to_str())  # without the padding and truncation of the last encode
        clean.no_padding()
        clean.no_truncation()
        return clean.to_str()

    @property
    def mask_id(self) -> int:
        return self.token_id(self.require_mask())

    def require_mask(self) -> str:
        if self.mask_token is None:
            raise RecipeError(f"{self.where}: this needs a tokenizer with a mask token ([MASK]); it has none.")
        return self.mask_token

    def token_id(self, token: str) -> int:
        return self.backend.token_to_id(token) if self._raw else self.backend.convert_tokens_to_ids(token)

    def encode(self, texts: Sequence[str] | Sequence[list[str]], seq_len: int,
               words: bool = False) -> tuple[Tensor, Tensor, list[list[int | None]]]:
        """(input_ids, attention_mask) of shape (N, seq_len), padded and truncated, plus each row's word ids
        (which input word each token came from; None on special tokens and padding). With `words=True` the
        texts are lists of words (split on whitespace by the caller) and word ids index those lists."""
        if self._raw:
            tokenizer = self.backend.from_str(self.backend.to_str())  # a copy: padding settings stay local
            tokenizer.enable_truncation(max_length=seq_len)
            tokenizer.enable_padding(pad_id=self.pad_id, pad_token=tokenizer.id_to_token(self.pad_id), length=seq_len)
            encodings = tokenizer.encode_batch(list(texts), is_pretokenized=words)
            ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
            attention = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
            return ids, attention, [list(e.word_ids) for e in encodings]
        enc = self.backend(list(texts), padding="max_length", truncation=True, max_length=seq_len,
                           is_split_into_words=words, return_tensors="pt")
        if words and not getattr(enc, "is_fast", False):
            raise RecipeError(f"{self.where}: word alignment needs a fast (Rust) transformers tokenizer.")
        word_ids = [enc.word_ids(i) for i in range(len(texts))] if getattr(enc, "is_fast", False) else []
        return enc["input_ids"].long(), enc["attention_mask"].long(), word_ids


def load_tokenizer(tokenizer: str, train_texts: Sequence[str], vocab_size: int | None,
                   base_dir: str | Path | None = None, where: str = "data") -> TextTokenizer:
    """The `tokenizer` data arg: `wordpiece` (trained on `train_texts`), `hf:<folder or hub name>` (a folder is
    looked up relative to the recipe first) or `py:package.module:attr` (called with no arguments). Errors name
    `{where}.args.tokenizer` and `{where}.args.vocab_size`."""
    field = f"{where}.args.tokenizer"
    if not isinstance(tokenizer, str) or not (tokenizer in WORDPIECES or tokenizer.startswith("hf:")
                                              or is_py_ref(tokenizer)):
        raise RecipeError(f"{field}: unknown tokenizer {tokenizer!r}; use 'wordpiece', 'stdlib_wordpiece', "
                          "'hf:<folder or hub name>' "
                          "or 'py:package.module:attr'.")
    if tokenizer not in WORDPIECES and vocab_size is not None:
        raise RecipeError(f"{where}.args.vocab_size only sizes the in-process wordpiece tokenizer; remove it "
                          f"(the tokenizer {tokenizer!r} brings its own vocabulary).")
    if tokenizer in WORDPIECES:
        texts = train_texts if tokenizer == "wordpiece" else outside_topics()
        return TextTokenizer(train_wordpiece(texts, 2000 if vocab_size is None else vocab_size), field)
    if tokenizer.startswith("hf:"):
        name = tokenizer.removeprefix("hf:")
        local = local_path(name, base_dir)
        try:
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(str(local) if local.exists() else name)
        except (OSError, ValueError) as exc:
            raise RecipeError(f"{field}: cannot load {tokenizer!r} ({str(exc).splitlines()[0]}). Give a local "
                              "folder with the tokenizer files, or a hub name on a machine with network.") from None
        return TextTokenizer(backend, field)
    factory = resolve_py_ref(tokenizer, where=field, search_dir=base_dir)
    return TextTokenizer(factory() if callable(factory) else factory, field)


def _sample(items: list, limit: int | None, seed: int) -> list:
    """`items` shuffled with `seed`, the first `limit` when given (as `corpus.stdlib_sentences` samples)."""
    random.Random(seed).shuffle(items)
    return items[:limit] if limit is not None else items


def _cat(parts: Sequence[TensorData], name: str) -> TensorData:
    return TensorData({key: torch.cat([p.tensors[key] for p in parts]) for key in parts[0].tensors}, name=name)


WORDPIECES = ("wordpiece", "stdlib_wordpiece")


def _topic_of(record: DocSentence) -> str:
    return record.module.split(".")[0]


def outside_topics() -> list[str]:
    """The docstring sentences of every module outside the TOPICS areas, in corpus order: the general-domain text
    `stdlib_wordpiece` is trained on and `stdlib_mlm(exclude_topics=True)` pre-trains on."""
    packages = {package for group in TOPICS.values() for package in group}
    return [r.text for r in stdlib_documented_sentences() if _topic_of(r) not in packages]


def topic_records() -> tuple[list[DocSentence], np.ndarray]:
    """The docstring sentences of the TOPICS areas and their class ids (index into TOPICS)."""
    package_label = {package: k for k, packages in enumerate(TOPICS.values()) for package in packages}
    records = [r for r in stdlib_documented_sentences() if _topic_of(r) in package_label]
    labels = np.array([package_label[_topic_of(r)] for r in records], dtype=np.int64)
    return records, labels


@TEXT_DATASETS.register("stdlib_topics")
def stdlib_topics(tokenizer: str = "wordpiece", vocab_size: int | None = None, seq_len: int = 64,
                  augment: dict[str, Any] | None = None, test_size: float = 0.2, val_size: float = 0.1,
                  seed: int = 0, student_labels: int | None = None, transfer_set: bool = True,
                  base_dir: str | Path | None = None, where: str = "data") -> tuple[DataBundle, TextTokenizer]:
    """(DataBundle, tokenizer) for topic classification of stdlib docstring sentences (labels: TOPICS order);
    the split, `student_labels`, `transfer_set` and `augment` as in `sentence_classification`."""
    records, labels = topic_records()
    return sentence_classification([r.text for r in records], labels, len(TOPICS), tokenizer,
                                   vocab_size, seq_len, augment, test_size, val_size, seed, student_labels,
                                   transfer_set, base_dir, where, class_names=tuple(TOPICS))


def sentence_classification(texts: Sequence[str], labels: np.ndarray, num_classes: int,
                            tokenizer: str = "wordpiece", vocab_size: int | None = None, seq_len: int = 64,
                            augment: dict[str, Any] | None = None, test_size: float = 0.2, val_size: float = 0.1,
                            seed: int = 0, student_labels: int | None = None, transfer_set: bool = True,
                            base_dir: str | Path | None = None, where: str = "data",
                            class_names: Sequence[str] | None = None) -> tuple[DataBundle, TextTokenizer]:
    """(DataBundle, tokenizer) of one label per text (-1 in `labels`: an unlabelled text), for every
    sentence-classification source.

    Labelled texts are split into train / val / test, stratified by label. The teacher trains on every labelled
    training row. With `student_labels`, the student gets a stratified labelled subset of them (fixed by `seed`),
    and with `transfer_set` the other training rows as well, unlabelled (labels -100); the scratch baseline gets
    the labelled subset only. Unlabelled texts join the student's rows (labels -100) when `transfer_set` is on,
    and the tokenizer's training texts in any case; they are never evaluated on. `augment` (see
    kdforge.data.augment) adds Tang et al.'s augmented copies of the student's training sentences, unlabelled,
    to the student's rows only.
    """
    augment_spec = AugmentSpec.from_arg(augment, f"{where}.args.augment") if augment is not None else None
    labelled = np.flatnonzero(labels >= 0)
    unlabelled = torch.from_numpy(np.flatnonzero(labels < 0))
    rest, test, y_rest, _ = stratified_split(labelled, labels[labelled], test_size, seed)
    train, val = rest, np.array([], dtype=np.int64)
    if val_size > 0:
        train, val, _, _ = stratified_split(rest, y_rest, val_size / (1 - test_size), seed)
    train, val, test = (torch.from_numpy(np.sort(part)) for part in (train, val, test))
    tok = load_tokenizer(tokenizer, [texts[i] for i in torch.cat([train, unlabelled]).tolist()], vocab_size,
                         base_dir, where)
    ids, attention, _ = tok.encode(texts, seq_len)
    targets = torch.from_numpy(np.where(labels >= 0, labels, IGNORE_INDEX).astype(np.int64))
    data = TensorData({"input_ids": ids, "attention_mask": attention, "labels": targets})
    names = tuple(str(c) for c in class_names) if class_names is not None else None
    bundle = shared_rows_bundle(DataInfo((seq_len,), num_classes, names), data, train, val, test)
    student_train, scratch_train = labelled_split(bundle.teacher_train, student_labels, transfer_set, seed, where)
    if transfer_set and len(unlabelled):
        student_train = _cat([student_train, data.subset(unlabelled)], name="train (student)")
    if augment_spec is not None:
        sentences = [texts[i] for i in student_train.tensors["index"].tolist()]
        augmented = augment_sentences(sentences, tok.require_mask(), augment_spec)
        aug_ids, aug_attention, _ = tok.encode(augmented, seq_len)
        fresh = torch.arange(len(texts), len(texts) + len(augmented))  # ids no other row has
        extra = TensorData({"input_ids": aug_ids, "attention_mask": aug_attention, "index": fresh,
                            "labels": torch.full((len(augmented),), IGNORE_INDEX, dtype=torch.long)})
        student_train = _cat([student_train, extra], name="train (student, augmented)")
    bundle.student_train = student_train
    bundle.scratch_train = scratch_train
    return bundle, tok


@TEXT_DATASETS.register("file")
def text_file(path: str, text_field: str = "text", label_field: str = "label", format: str | None = None,
              tokenizer: str = "wordpiece", vocab_size: int | None = None, seq_len: int = 128,
              augment: dict[str, Any] | None = None, test_size: float = 0.2, val_size: float = 0.1, seed: int = 0,
              student_labels: int | None = None, transfer_set: bool = True,
              base_dir: str | Path | None = None, where: str = "data") -> tuple[DataBundle, TextTokenizer]:
    """`text:file`: the user's labelled texts from a CSV, TSV or JSON Lines file (`kdforge.data.text_file`), as
    a sentence-classification source; `path` is relative to the recipe's folder."""
    from kdforge.data.text_file import read_labelled_texts

    local = Path(path).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = Path(base_dir) / local
    read = read_labelled_texts(local, text_field, label_field, format, where)
    return sentence_classification(read.texts, read.labels, len(read.classes), tokenizer, vocab_size,
                                   seq_len, augment, test_size, val_size, seed, student_labels, transfer_set,
                                   base_dir, where, class_names=read.classes)


def _name_parts(record: DocSentence) -> set[str]:
    parts = f"{record.module}.{record.qualname}".replace("_", ".").lower().split(".")
    return {part for part in parts if len(part) >= 2}


def name_tags(record: DocSentence) -> list[int]:
    """Per whitespace word of `record.text`: 1 when the word (lower-cased, punctuation stripped) is a part of the
    documented object's qualified name (module path, class and function names split on '.' and '_'), else 0.

    For example in `asyncio.queues.Queue.qsize`, "Number of items in the queue." tags "queue". The sentence alone
    does not say which words those are (a "queue" in a `logging` docstring is not tagged), so a tagger has to
    infer the documented object from the context.
    """
    parts = _name_parts(record)
    return [int("".join(c for c in word.lower() if c.isalnum()) in parts) for word in record.text.split()]


@TEXT_DATASETS.register("stdlib_tags")
def stdlib_tags(tokenizer: str = "wordpiece", vocab_size: int | None = None, seq_len: int = 64,
                limit: int | None = None, test_size: float = 0.2, val_size: float = 0.1, seed: int = 0,
                base_dir: str | Path | None = None, where: str = "data") -> tuple[DataBundle, TextTokenizer]:
    """(DataBundle, tokenizer) for token classification with `name_tags` (2 classes). Only the first word piece of
    each word is labelled; later pieces, [CLS], [SEP] and padding get -100, and `mask` marks labelled positions."""
    records = _sample(stdlib_documented_sentences(), limit, seed)
    train, val, test = permutation_split(len(records), test_size, val_size, seed)
    words = [r.text.split() for r in records]
    tok = load_tokenizer(tokenizer, [records[i].text for i in train.tolist()], vocab_size, base_dir, where)
    ids, attention, word_ids = tok.encode(words, seq_len, words=True)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, (record, row_words) in enumerate(zip(records, word_ids, strict=True)):
        tags = name_tags(record)
        previous = None
        for position, word in enumerate(row_words):
            if word is not None and word != previous:
                labels[row, position] = tags[word]
            previous = word
    data = TensorData({"input_ids": ids, "attention_mask": attention, "labels": labels,
                       "mask": labels != IGNORE_INDEX})
    return shared_rows_bundle(DataInfo((seq_len,), 2), data, train, val, test), tok


@TEXT_DATASETS.register("stdlib_mlm")
def stdlib_mlm(tokenizer: str = "wordpiece", vocab_size: int | None = None, seq_len: int = 64,
               limit: int | None = None, dupe_factor: int = 5, mlm_probability: float = 0.15,
               exclude_topics: bool = False, test_size: float = 0.1, val_size: float = 0.1, seed: int = 0,
               base_dir: str | Path | None = None, where: str = "data") -> tuple[DataBundle, TextTokenizer]:
    """(DataBundle, tokenizer) of statically masked MLM rows, as the original BERT pre-training data:
    `dupe_factor` copies of each training sentence with different masks (BERT's 15 % / 80-10-10 rule, via
    `kdforge.models.hf_student.mlm_mask`); val and test are masked once with a fixed seed. `num_classes` in
    the DataInfo is the vocabulary size. Copy k of sentence i has index i + k * (number of sentences).
    `exclude_topics` leaves out the TOPICS areas' sentences (pre-training text disjoint from text:stdlib_topics)."""
    from kdforge.models.hf_student import mlm_mask

    if not isinstance(dupe_factor, int) or dupe_factor < 1:
        raise RecipeError(f"{where}.args.dupe_factor must be an integer >= 1; got {dupe_factor!r}.")
    sentences = _sample(outside_topics(), limit, seed) if exclude_topics else corpus.stdlib_sentences(limit, seed)
    n = len(sentences)
    train, val, test = permutation_split(n, test_size, val_size, seed)
    tok = load_tokenizer(tokenizer, [sentences[i] for i in train.tolist()], vocab_size, base_dir, where)
    ids, attention, _ = tok.encode(sentences, seq_len)
    clean = {"input_ids": ids, "attention_mask": attention, "index": torch.arange(n)}

    def masked(rows: Tensor, generator_seed: int) -> dict[str, Tensor]:
        batch = {key: value[rows] for key, value in clean.items()}
        try:
            return mlm_mask(batch, tok.mask_id, tok.vocab_size, tok.special_ids, mlm_probability,
                            torch.Generator().manual_seed(generator_seed))
        except ValueError as exc:
            raise RecipeError(f"{where}.args.mlm_probability: {exc}") from exc

    copies = []
    for k in range(dupe_factor):
        copy = masked(train, seed * 1000 + k)
        copies.append(TensorData({**copy, "index": copy["index"] + k * n}, name="train"))
    train_data = _cat(copies, name="train")
    held_out_seed = seed * 1000 + 999  # val and test: one fixed mask, the same in every run
    val_data = TensorData(masked(val, held_out_seed), name="val") if len(val) else None
    return DataBundle(info=DataInfo((seq_len,), tok.vocab_size), teacher_train=train_data, student_train=train_data,
                      scratch_train=train_data, val=val_data,
                      test=TensorData(masked(test, held_out_seed + 1), name="test")), tok


@TEXT_DATASETS.register("stdlib_sentences")
def stdlib_sentences(tokenizer: str = "wordpiece", vocab_size: int | None = None, seq_len: int = 64,
                     limit: int | None = None, test_size: float = 0.1, val_size: float = 0.1, seed: int = 0,
                     base_dir: str | Path | None = None, where: str = "data") -> tuple[DataBundle, TextTokenizer]:
    """(DataBundle, tokenizer) of unlabelled sentences (no `labels` key) for sentence-embedding distillation,
    where the teacher's embeddings are the only targets. `num_classes` in the DataInfo is 0 (there are none)."""
    sentences = corpus.stdlib_sentences(limit, seed)
    train, val, test = permutation_split(len(sentences), test_size, val_size, seed)
    tok = load_tokenizer(tokenizer, [sentences[i] for i in train.tolist()], vocab_size, base_dir, where)
    ids, attention, _ = tok.encode(sentences, seq_len)
    data = TensorData({"input_ids": ids, "attention_mask": attention, "mask": attention.bool()})
    return shared_rows_bundle(DataInfo((seq_len,), 0), data, train, val, test), tok


__all__ = ["SPECIAL_TOKENS", "TOPICS", "TextTokenizer", "load_tokenizer", "name_tags", "outside_topics",
           "sentence_classification", "stdlib_mlm", "stdlib_sentences", "stdlib_tags", "stdlib_topics", "text_file",
           "topic_records", "train_wordpiece"]
