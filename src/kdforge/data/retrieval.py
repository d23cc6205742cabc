"""`text:stdlib_retrieval`: passage ranking on the standard library's docstrings, for cross-encoder -> dual-encoder
distillation (margin-MSE, Hofstätter et al. 2020) from a recipe, with no download.

A query is one docstring sentence; its positive passage is another sentence of the same docstring (the same
documented object), and its negatives are sentences documenting other objects, drawn from the same top-level
package when it has enough (harder negatives than random ones). Each row holds the positive first, then the
negatives, which is the order `margin_mse` expects; the label is therefore 0 (the positive's position), so the
teacher trains with plain cross-entropy over its candidate scores (a listwise softmax ranking loss) and
"accuracy" in the report is the fraction of queries whose positive is ranked first (MRR@1). Every model in
`kdforge.models.retrieval` scores each candidate on its own, so the fixed position tells it nothing.

Rows (n = 1 + negatives candidates per query):

    query_input_ids, query_attention_mask   (N, Lq)        the query, for the dual encoder
    doc_input_ids, doc_attention_mask       (N, n, Ld)     the candidates, for the dual encoder
    pair_input_ids, pair_attention_mask,    (N, n, Lq+Ld)  [CLS] query [SEP] candidate [SEP], for the
      pair_token_type_ids                                  cross-encoder (segment 1 on the candidate)
    labels                                  (N,)           0: the positive is first
    index                                   (N,)
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor

from kdforge.data.bundle import DataBundle, permutation_split, shared_rows_bundle
from kdforge.data.corpus import DocSentence, stdlib_documented_sentences
from kdforge.data.sources import TEXT_DATASETS
from kdforge.data.text import TextTokenizer, load_tokenizer
from kdforge.errors import RecipeError
from kdforge.types import DataInfo, TensorData


def ranking_triples(records: list[DocSentence], negatives: int, limit: int | None,
                    seed: int) -> list[tuple[str, list[str]]]:
    """(query, [positive, negative_1, ...]) per query: consecutive sentences of one docstring make a (query,
    positive) pair; negatives document other objects, from the same top-level package when it has enough."""
    rng = random.Random(seed)
    by_object: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        by_object[(record.module, record.qualname)].append(record.text)
    by_package: dict[str, list[tuple[tuple[str, str], str]]] = defaultdict(list)
    for key, texts in by_object.items():
        by_package[key[0].split(".")[0]].extend((key, text) for text in texts)
    everything = [(key, text) for key, texts in by_object.items() for text in texts]
    triples = []
    for key, texts in by_object.items():
        for query, positive in zip(texts, texts[1:], strict=False):
            pool = by_package[key[0].split(".")[0]]
            pool = pool if sum(k != key for k, _ in pool) >= 4 * negatives else everything
            chosen: list[str] = []
            while len(chosen) < negatives:
                other, text = pool[rng.randrange(len(pool))]
                if other != key and text not in chosen:
                    chosen.append(text)
            triples.append((query, [positive, *chosen]))
    rng.shuffle(triples)
    return triples[:limit] if limit is not None else triples


def join_pairs(query_ids: Tensor, query_mask: Tensor, doc_ids: Tensor, doc_mask: Tensor,
               pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """[CLS] q [SEP] + d [SEP] from separately encoded `[CLS] q [SEP]` (N, Lq) and `[CLS] d [SEP]` (N, n, Ld)
    rows: the candidate's leading [CLS] is dropped. Returns ids, attention mask and token types (N, n, Lq+Ld-1)."""
    n_rows, n_docs, doc_len = doc_ids.shape
    width = query_ids.shape[1] + doc_len - 1
    ids = torch.full((n_rows, n_docs, width), pad_id, dtype=torch.long)
    types = torch.zeros_like(ids)
    q_len, d_len = query_mask.sum(1), doc_mask.sum(2)
    for i in range(n_rows):
        q = query_ids[i, : q_len[i]]
        for j in range(n_docs):
            d = doc_ids[i, j, 1: d_len[i, j]]
            ids[i, j, : len(q)] = q
            ids[i, j, len(q): len(q) + len(d)] = d
            types[i, j, len(q): len(q) + len(d)] = 1
    lengths = q_len[:, None] + d_len - 1  # (N, n)
    attention = (torch.arange(width)[None, None, :] < lengths[..., None]).long()
    return ids, attention, types


@TEXT_DATASETS.register("stdlib_retrieval")
def stdlib_retrieval(tokenizer: str = "wordpiece", vocab_size: int | None = None, query_len: int = 32,
                     doc_len: int = 32, negatives: int = 3, limit: int | None = None, test_size: float = 0.1,
                     val_size: float = 0.1, seed: int = 0, base_dir: str | Path | None = None,
                     where: str = "data") -> tuple[DataBundle, TextTokenizer]:
    """(DataBundle, tokenizer) of ranking rows (see the module docstring). The tokenizer is trained on the
    training queries and candidates only. `num_classes` in the DataInfo is the candidates per query (1 +
    negatives); `input_shape` is [query_len + doc_len - 1], the joined pair length (position embeddings)."""
    if not isinstance(negatives, int) or negatives < 1:
        raise RecipeError(f"{where}.args.negatives must be an integer >= 1; got {negatives!r}.")
    triples = ranking_triples(stdlib_documented_sentences(), negatives, limit, seed)
    if len(triples) < 10:
        raise RecipeError(f"{where}.args.limit: {len(triples)} queries are too few to split; raise it.")
    train, val, test = permutation_split(len(triples), test_size, val_size, seed)
    tok = load_tokenizer(tokenizer, [text for i in train.tolist() for text in (triples[i][0], *triples[i][1])],
                         vocab_size, base_dir, where)
    q_ids, q_mask, _ = tok.encode([query for query, _ in triples], query_len)
    n_docs = 1 + negatives
    d_ids, d_mask, _ = tok.encode([doc for _, docs in triples for doc in docs], doc_len)
    d_ids, d_mask = d_ids.view(len(triples), n_docs, doc_len), d_mask.view(len(triples), n_docs, doc_len)
    p_ids, p_mask, p_types = join_pairs(q_ids, q_mask, d_ids, d_mask, tok.pad_id)
    data = TensorData({"query_input_ids": q_ids, "query_attention_mask": q_mask, "doc_input_ids": d_ids,
                       "doc_attention_mask": d_mask, "pair_input_ids": p_ids, "pair_attention_mask": p_mask,
                       "pair_token_type_ids": p_types, "labels": torch.zeros(len(triples), dtype=torch.long)})
    return shared_rows_bundle(DataInfo((query_len + doc_len - 1,), n_docs), data, train, val, test), tok


__all__ = ["join_pairs", "ranking_triples", "stdlib_retrieval"]
