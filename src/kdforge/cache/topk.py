"""Top-k teacher logits: how the cache compresses a teacher's outputs.

For a large output space the cache keeps, per position, the k largest logits (in float16/bfloat16), their
indices and the float32 log-sum-exp of the full logits. The format (`TopK`) and the distribution rebuilt from
it live with the losses that read it (`kdforge.losses.sparse`, where the error bounds are documented); they
are re-exported here under their old names.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdforge.losses.sparse import Tail, TopK, reconstruct_log_probs, reconstruct_logits, sparse_kl


def compress_topk(logits: Tensor, k: int, dtype: torch.dtype = torch.float16) -> TopK:
    """Keep the k largest logits along the last dim (values in `dtype`), their indices and the float32 lse."""
    k = min(k, logits.shape[-1])
    values, indices = torch.topk(logits.float(), k, dim=-1, sorted=True)
    index_dtype = torch.int16 if logits.shape[-1] <= 2**15 else torch.int32
    return TopK(values.to(dtype), indices.to(index_dtype), torch.logsumexp(logits.float(), dim=-1),
                logits.shape[-1])


__all__ = ["Tail", "TopK", "compress_topk", "reconstruct_log_probs", "reconstruct_logits", "sparse_kl"]
