"""Causal-LM tokenizers trained in-process on local text: byte-level BPE, Unigram and WordPiece.

Three families with three ways of marking spaces (byte-level 'Ġ', metaspace '▁', WordPiece's dropped spaces and
'##' continuations), so a teacher and a student can be given genuinely different tokenizers, as in practice
(cross-tokenizer distillation, `kdforge.llm.align`). Ids 0-3 are PAD, BOS, EOS and UNK in every one of them.
"""

from __future__ import annotations

from kdforge.errors import RecipeError

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
TOKENIZER_KINDS = ("bpe", "unigram", "wordpiece")


def train_bpe(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (`tokenizers`) trained on `texts`; ids 0-3 are PAD, BOS, EOS, UNK."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def train_lm_tokenizer(texts: list[str], kind: str = "bpe", vocab_size: int = 512, where: str = "tokenizer"):
    """A causal-LM tokenizer trained in-process on `texts` (ids 0-3: PAD, BOS, EOS, UNK): byte-level BPE, Unigram
    (metaspace '▁') or WordPiece (whitespace dropped, '##' continuations)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if kind == "bpe":
        return train_bpe(texts, vocab_size)
    if kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="[UNK]",
                                          show_progress=False)
    elif kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    else:
        raise RecipeError(f"{where}: {kind!r} is not a tokenizer kind; use one of {', '.join(TOKENIZER_KINDS)}.")
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return _numbered_in_a_fixed_order(tokenizer, kind)


def _numbered_in_a_fixed_order(tokenizer, kind: str):
    """The same tokenizer with its ids in an order that depends only on its tokens: the Unigram and WordPiece
    trainers number equal vocabularies differently from one training to the next, so the same recipe would give
    other ids each run (and a teacher cache built by one process would be refused by the next). Unigram keeps
    its scores (they, not the ids, decide the tokenization): pieces by falling score, then text; WordPiece
    matches the longest piece, so its ids can follow the text. The special tokens stay at 0-3. (The Unigram
    trainer's scores themselves still differ in their last digits between trainings: the same text then gives
    the same ids almost always, but the tokenizer's fingerprint differs.)"""
    import json

    from tokenizers import Tokenizer

    state = json.loads(tokenizer.to_str())
    model = state["model"]
    specials = len(SPECIAL_TOKENS)
    if kind == "unigram":
        model["vocab"] = model["vocab"][:specials] + sorted(model["vocab"][specials:], key=lambda piece: piece[0])
    else:
        by_id = sorted(model["vocab"], key=model["vocab"].get)
        order = by_id[:specials] + sorted(by_id[specials:])
        model["vocab"] = {token: i for i, token in enumerate(order)}
    return Tokenizer.from_str(json.dumps(state))
