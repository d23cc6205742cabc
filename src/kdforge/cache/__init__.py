"""The offline teacher cache: run the teacher once, store its outputs, train students from the store.

See docs/cache.md. `CacheStore`/`write_cache` hold and build the store; `CachedTeacher` is the `TeacherSource`
training reads; `kdforge.cache.topk` rebuilds distributions from top-k logits (also for LM losses). A recipe's
cache is the application's: `kdforge.app.cache` opens it, `kdforge.app.teacher.cache_recipe` is `kdforge cache`.
"""

from kdforge.cache.store import CacheError, CacheSettings, CacheStore, write_cache
from kdforge.cache.teacher import CachedTeacher, ReplayTeacher
from kdforge.cache.topk import TopK, compress_topk, reconstruct_log_probs, reconstruct_logits, sparse_kl

__all__ = [
    "CacheError", "CacheSettings", "CacheStore", "CachedTeacher", "ReplayTeacher", "TopK", "compress_topk",
    "reconstruct_log_probs", "reconstruct_logits", "sparse_kl", "write_cache",
]
