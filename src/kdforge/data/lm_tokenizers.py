"""Causal-LM tokenizers trained in-process on local text: byte-level BPE, Unigram and WordPiece.

Three families with three ways of marking spaces (byte-level 'Ġ', metaspace '▁', WordPiece's dropped spaces and
'##' continuations), so a teacher and a student can be given genuinely different tokenizers, as in practice
(cross-tokenizer distillation, `kdforge.lm.align`). Ids 0-3 are PAD, BOS, EOS and UNK in every one of them.
"""

from __future__ import annotations

from kdforge.errors import RecipeError

SPECIAL_TOKENS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
TOKENIZER_KINDS = ("bpe", "unigram", "wordpiece")
# A trained Unigram tokenizer's scores (log-probabilities) are kept to this many decimals: the trainer's sums run
# in hash-map order, so its scores differ by ~1e-10 from one training to the next; 1e-5 is far above that noise
# and far below any difference that changes how a text is split.
UNIGRAM_SCORE_DECIMALS = 5
# The Unigram trainer keeps every character it saw: those its pruning dropped come back at the lowest score plus
# this step each, in an arbitrary (hash-set) order (tokenizers' UnigramTrainer).
_UNIGRAM_FILL_STEP = 1e-4


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
    its scores (they, not the ids, decide the tokenization), made the same every training by
    `_canonical_unigram_scores`, and numbers its pieces in text order; WordPiece matches the longest piece, so
    its ids can follow the text too. The special tokens stay at 0-3."""
    import json

    from tokenizers import Tokenizer

    state = json.loads(tokenizer.to_str())
    model = state["model"]
    specials = len(SPECIAL_TOKENS)
    if kind == "unigram":
        pieces = _canonical_unigram_scores(model["vocab"][specials:])
        model["vocab"] = model["vocab"][:specials] + sorted(pieces, key=lambda piece: piece[0])
    else:
        by_id = sorted(model["vocab"], key=model["vocab"].get)
        order = by_id[:specials] + sorted(by_id[specials:])
        model["vocab"] = {token: i for i, token in enumerate(order)}
    return Tokenizer.from_str(json.dumps(state))


def _canonical_unigram_scores(pieces: list[list]) -> list[list]:
    """`pieces` ([text, score] each) with the scores a training gives whatever its hash order: the characters the
    trainer brought back after pruning (single characters at the lowest score plus whole `_UNIGRAM_FILL_STEP`s)
    get those scores in text order, and every score is rounded to `UNIGRAM_SCORE_DECIMALS` decimals. Scores that
    differ by more than that still differ, so another tokenizer keeps another fingerprint."""
    if not pieces:
        return pieces
    lowest = min(score for _, score in pieces)
    steps = [(score - lowest) / _UNIGRAM_FILL_STEP for _, score in pieces]
    fills = [i for i, ((text, _), k) in enumerate(zip(pieces, steps, strict=True))
             if len(text) == 1 and abs(k - round(k)) < 1e-6]
    scores = [score for _, score in pieces]
    for i, score in zip(sorted(fills, key=lambda i: pieces[i][0]), sorted(scores[i] for i in fills), strict=True):
        scores[i] = score
    return [[text, round(score, UNIGRAM_SCORE_DECIMALS)] for (text, _), score in zip(pieces, scores, strict=True)]
