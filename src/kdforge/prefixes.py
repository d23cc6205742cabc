"""Model-spec prefixes every layer recognises (foundation): the recipe schema and the model builder tell a served
teacher from other model specs without importing what serves it (`kdforge.llm.served` loads torch and an HTTP
client)."""

from __future__ import annotations

SERVED_PREFIX = "served:"  # `served:<url>`: a teacher behind an inference server (kdforge.llm.served)

__all__ = ["SERVED_PREFIX"]
