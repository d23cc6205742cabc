"""Sentence encoders from a recipe: `py:kdforge.models.sentence:sentence_encoder` wraps any encoder model spec in
`SentenceEncoder` (pooling, normalisation), optionally keeping only some of its layers (`student_from_teacher`),
so the teacher and a student built from it are the same factory with different `layers`.

    teacher: {model: "py:kdforge.models.sentence:sentence_encoder",
              args: {encoder: "py:kdforge.models.minilm:minilm_bert"}}
    student: {model: "py:kdforge.models.sentence:sentence_encoder",
              args: {encoder: "py:kdforge.models.minilm:minilm_bert", layers: [0, 5]}}

`char_tokenizer` (a fixed character vocabulary) makes smoke recipes and tests that need no download and tokenise
the same way on every load; their random-weight encoder is `builtin:bert` with `task: base`
(recipes/embed_mse/stdlib_tinybert_smoke.yaml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kdforge.errors import RecipeError
from kdforge.models.hf_student import SentenceEncoder, student_from_teacher


def sentence_encoder(encoder: str, encoder_args: dict[str, Any] | None = None,
                     layers: int | str | Sequence[int] | None = None, pooling: str = "mean", normalize: bool = True,
                     freeze_word_embeddings: bool = False) -> SentenceEncoder:
    """A `SentenceEncoder` over the model `encoder` names (any model spec: `py:`, `hf:` ...; built with
    `encoder_args`), or over `student_from_teacher(that model, layers)` when `layers` is given.

    Args:
        encoder: Model spec of a `transformers` encoder returning `last_hidden_state` (BertModel, AutoModel).
        encoder_args: Keyword arguments for that factory.
        layers: None (all layers, e.g. the teacher), or which layers the student keeps: 'every_other', an int,
            or a list of 0-based teacher layer indices (weights copied).
        pooling: 'mean' over real tokens or 'cls'.
        normalize: L2-normalise the embedding (sentence-transformers' all-MiniLM models do).
        freeze_word_embeddings: Keep the token embedding matrix fixed: a student that shares the teacher's
            vocabulary keeps the teacher's token vectors, and most of its parameters need no optimizer state.
    """
    from kdforge.models import build_model

    where = "sentence_encoder"
    model, _ = build_model(encoder, dict(encoder_args or {}), None, f"{where}.encoder")
    if layers is not None:
        try:
            model = student_from_teacher(model, layers)
        except ValueError as exc:
            raise RecipeError(f"{where}.layers: {exc}") from None
    if freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return SentenceEncoder(model, pooling=pooling, normalize=normalize)


CHAR_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def char_tokenizer() -> Any:
    """A character-level `tokenizers.Tokenizer`: ids 0-4 are [PAD] [UNK] [CLS] [SEP] [MASK], then one id per
    printable ASCII character (100 ids). Its vocabulary is fixed, so every load of the data gives the same ids,
    unlike a tokenizer trained in-process, which can break ties differently between runs."""
    import string

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(CHAR_SPECIAL_TOKENS + list(string.printable[:95]))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.add_special_tokens(CHAR_SPECIAL_TOKENS)
    return tokenizer


__all__ = ["char_tokenizer", "sentence_encoder"]
