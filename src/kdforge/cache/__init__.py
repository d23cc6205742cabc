"""The offline teacher cache: run the teacher once, store its outputs, train students from the store.

See docs/cache.md. `cache_recipe` is `kdforge cache` from Python; `CachedTeacher` is the `TeacherSource`
training reads; `kdforge.cache.topk` rebuilds distributions from top-k logits (also for LM losses).
"""

from kdforge.cache.build import CacheInfo, cache_recipe, cached_teacher, ensure_cache, replay_teacher
from kdforge.cache.store import CacheError, CacheSettings, CacheStore, write_cache
from kdforge.cache.teacher import CachedTeacher, ReplayTeacher
from kdforge.cache.topk import TopK, compress_topk, reconstruct_log_probs, reconstruct_logits, sparse_kl

__all__ = [
    "CacheError", "CacheInfo", "CacheSettings", "CacheStore", "CachedTeacher", "ReplayTeacher", "TopK",
    "cache_recipe", "cached_teacher", "compress_topk", "ensure_cache", "reconstruct_log_probs",
    "reconstruct_logits", "replay_teacher", "sparse_kl", "write_cache",
]
