"""Transfer-set augmentation for text students (Tang et al. 2019).

Tang, Lu, Liu, Mou, Vechtomova & Lin, "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks", 2019. https://arxiv.org/abs/1903.12136 (Section 3.3).

A small student learns more from the teacher when it sees more inputs than the labelled set holds. The paper
makes them from the training sentences, at the word level: each word becomes [MASK] with probability
p_mask, and then, with probability p_ng, only an n-gram of the result is kept (n uniform in 1..5). The
augmented sentences carry no labels; the teacher labels them through the distillation loss.

Left out: the paper's POS-guided word replacement (a word swapped for another word with the same part-of-speech
tag, probability p_pos), because it needs a POS tagger, which kdforge does not ship.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdforge.errors import RecipeError


@dataclass(frozen=True)
class AugmentSpec:
    """The recipe's `data.args.augment` mapping; defaults are the paper's (p_mask 0.1, p_ng 0.25, n <= 5)."""

    copies: int = 1
    p_mask: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    seed: int = 0

    @classmethod
    def from_arg(cls, value: object, where: str = "augment") -> AugmentSpec:
        """Validate the recipe mapping; unknown keys and out-of-range values are RecipeErrors naming `where`."""
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping like {{copies: 4, p_mask: 0.1}}; got {value!r}.")
        known = ("copies", "p_mask", "p_ngram", "max_ngram", "seed")
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise RecipeError(f"{where}: unknown keys {unknown}; valid keys: {', '.join(known)}.")
        spec = cls(**value)
        if not isinstance(spec.copies, int) or spec.copies < 1:
            raise RecipeError(f"{where}.copies must be an integer >= 1; got {spec.copies!r}.")
        for key in ("p_mask", "p_ngram"):
            prob = getattr(spec, key)
            if not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
                raise RecipeError(f"{where}.{key} must be a probability in [0, 1]; got {prob!r}.")
        if not isinstance(spec.max_ngram, int) or spec.max_ngram < 1:
            raise RecipeError(f"{where}.max_ngram must be an integer >= 1; got {spec.max_ngram!r}.")
        return spec


def augment_words(words: list[str], mask_token: str, spec: AugmentSpec, rng: random.Random) -> list[str]:
    """One augmented copy of a sentence given as words: masking first, then the n-gram sampling (paper order)."""
    out = [mask_token if rng.random() < spec.p_mask else word for word in words]
    if out and rng.random() < spec.p_ngram:
        n = min(rng.randint(1, spec.max_ngram), len(out))
        start = rng.randrange(len(out) - n + 1)
        out = out[start:start + n]
    return out


def augment_sentences(sentences: list[str], mask_token: str, spec: AugmentSpec) -> list[str]:
    """`spec.copies` augmented copies of every sentence (words split on whitespace), copy-major order:
    all sentences' first copies, then all second copies. Deterministic for `spec.seed`."""
    rng = random.Random(spec.seed)
    return [" ".join(augment_words(sentence.split(), mask_token, spec, rng))
            for _ in range(spec.copies) for sentence in sentences]


__all__ = ["AugmentSpec", "augment_sentences", "augment_words"]
