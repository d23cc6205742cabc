"""Vocabulary checks for token-level KD, run by the preflight on the first batch.

Token-level KD compares next-token distributions entry by entry, so the two models need one vocabulary.
Two cases are told apart:

* different vocabularies (sizes differ and the recipe does not say they share a tokenizer): an error that
  names both sizes and points to the cross-tokenizer losses (`uld`, `span_kl`, `span_hybrid` on rows paired by
  `data.args.teacher_tokenizer`) and to sequence-level KD, which trains on teacher-generated text;
* padded embeddings over one tokenizer (e.g. 152064 vs 151936 rows): the recipe says so with
  `vocab_size: <real size>` on the `token_kd` term, and only that real vocabulary is compared; a warning
  says what is trimmed from which model.
"""

from __future__ import annotations

import warnings

from torch import Tensor

from kdforge.errors import ShapeMismatchError
from kdforge.losses.token_kd import TokenKDLoss, vocab_mismatch_message


def check_vocabularies(loss, student_logits: Tensor | None, teacher_logits: Tensor | None,
                       where: str = "losses") -> list[str]:
    """Check every `token_kd` term of `loss` (a WeightedSum or one loss) against the logits' last dims.

    Messages name a term as `{where}[{term}]` (the application passes "recipe.losses"). Returns the warnings
    issued (also sent through `warnings.warn`); raises `ShapeMismatchError` on a mismatch.
    """
    terms = dict(loss.terms) if hasattr(loss, "terms") else {"token_kd": loss}
    if student_logits is None or teacher_logits is None:
        return []
    s_vocab = int(student_logits.shape[-1])
    t_vocab = int(getattr(teacher_logits, "vocab_size", None) or teacher_logits.shape[-1])
    messages = []
    for name, term in terms.items():
        if not isinstance(term, TokenKDLoss):
            continue
        term_where = f"{where}[{name}]"
        if term.vocab_size is None:
            if s_vocab != t_vocab:
                raise ShapeMismatchError(vocab_mismatch_message(s_vocab, t_vocab, term_where))
            continue
        if term.vocab_size > min(s_vocab, t_vocab):
            raise ShapeMismatchError(
                f"{term_where}: vocab_size={term.vocab_size} but the student has {s_vocab} and the teacher {t_vocab} "
                f"logits; set vocab_size to the real (unpadded) vocabulary, at most {min(s_vocab, t_vocab)}.")
        trimmed = [f"{who} {size} -> {term.vocab_size} ({size - term.vocab_size} padded rows dropped)"
                   for who, size in (("teacher", t_vocab), ("student", s_vocab)) if size > term.vocab_size]
        if trimmed:
            message = (f"{term_where}: comparing only the real vocabulary (the first {term.vocab_size} entries, "
                       f"vocab_size in the recipe): {'; '.join(trimmed)}.")
            warnings.warn(message, stacklevel=2)
            messages.append(message)
    return messages
