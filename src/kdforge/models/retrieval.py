"""Ranking models recipes can name for retrieval distillation (margin-MSE, Hofstätter et al. 2020), built from a
BERT config like `builtin:bert`, and fed by `text:stdlib_retrieval` (or any data with the same keys):

    builtin:cross_encoder   teacher: reads [CLS] query [SEP] candidate [SEP] and scores it with a linear head;
                            inputs [pair_input_ids, pair_attention_mask, pair_token_type_ids] -> (B, n) scores
    builtin:dual_encoder    student: embeds query and candidates separately (shared weights, mean pooling) and
                            scores by dot product, so candidate embeddings can be indexed ahead of time;
                            inputs [query_input_ids, query_attention_mask, doc_input_ids, doc_attention_mask]

Both score every candidate independently, so the order of candidates in a row carries no information.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdforge.models.hf_student import DualEncoder, SentenceEncoder
from kdforge.models.text import bert
from kdforge.registry import MODELS


@MODELS.register("cross_encoder")
class CrossEncoder(nn.Module):
    """A BERT with a one-logit sequence-classification head, applied to each (query, candidate) pair of a row.

    Args:
        input_shape: [pair length] (filled in from the data: position embeddings cover it).
        num_classes: Candidates per row (filled in from the data; the head has one output regardless).
        vocab_size, layers, hidden, heads, intermediate, dropout, seed: as for `builtin:bert`.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, vocab_size: int | None = None,
                 layers: int = 2, hidden: int = 128, heads: int = 2, intermediate: int | None = None,
                 dropout: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.scorer = bert(input_shape, 1, vocab_size, "sequence_classification", layers, hidden, heads,
                           intermediate, dropout, seed)

    def forward(self, pair_input_ids: Tensor, pair_attention_mask: Tensor,
                pair_token_type_ids: Tensor | None = None) -> Tensor:
        batch, n, length = pair_input_ids.shape
        flat = {"input_ids": pair_input_ids.reshape(batch * n, length),
                "attention_mask": pair_attention_mask.reshape(batch * n, length)}
        if pair_token_type_ids is not None:
            flat["token_type_ids"] = pair_token_type_ids.reshape(batch * n, length)
        return self.scorer(**flat).logits.view(batch, n)  # (B, n)


@MODELS.register("dual_encoder")
def dual_encoder(input_shape: Sequence[int], num_classes: int, vocab_size: int | None = None, layers: int = 2,
                 hidden: int = 128, heads: int = 2, intermediate: int | None = None, dropout: float = 0.1,
                 pooling: str = "mean", seed: int = 0) -> DualEncoder:
    """A `DualEncoder` over a random-weight BERT (`builtin:bert`, task base) with `pooling` and no normalisation
    (dot-product scores keep a scale, which margin-MSE matches). Arguments as for `builtin:bert`."""
    encoder = bert(input_shape, 0, vocab_size, "base", layers, hidden, heads, intermediate, dropout, seed)
    return DualEncoder(SentenceEncoder(encoder, pooling=pooling, normalize=False))


__all__ = ["CrossEncoder", "dual_encoder"]
