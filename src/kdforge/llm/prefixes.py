"""Model-spec prefixes the llm package answers for, in a module of their own: the recipe schema and the model
builder recognise them without importing what serves them (`kdforge.llm.served` loads torch and an HTTP client)."""

from __future__ import annotations

SERVED_PREFIX = "served:"  # `served:<url>`: a teacher behind an inference server (kdforge.llm.served)

__all__ = ["SERVED_PREFIX"]
