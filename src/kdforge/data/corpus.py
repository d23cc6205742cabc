"""Unlabelled English text that exists on every machine with Python: sentences from the standard library's
docstrings, read with `ast` (no module is imported, so no code runs).

Used as a transfer set for text students (sentence embeddings, masked and causal language models) when no
corpus can be downloaded.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from functools import lru_cache
from pathlib import Path

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SKIP_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"}


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    nodes = [tree, *(node for node in ast.walk(tree) if isinstance(node, kinds))]
    return [doc for node in nodes if (doc := ast.get_docstring(node))]


def _is_sentence(text: str) -> bool:
    words = text.split()
    if not 6 <= len(words) <= 40 or not text[0].isupper() or text[-1] not in ".!?":
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    lower_words = sum(w[0].islower() for w in words if w[0].isalpha())
    return letters >= 0.9 * len(text) and lower_words >= 0.5 * len(words)


@lru_cache(maxsize=1)
def _all_stdlib_sentences() -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if _SKIP_PARTS & set(path.relative_to(root).parts):
            continue
        for doc in _docstrings(path):
            for paragraph in re.split(r"\n\s*\n", doc):
                text = " ".join(paragraph.split())
                for sentence in _SPLIT.split(text):
                    if _is_sentence(sentence):
                        seen.setdefault(sentence, None)
    return tuple(seen)


def stdlib_sentences(limit: int | None = None, seed: int = 0) -> list[str]:
    """Distinct English sentences from the standard library's docstrings (about 10,000 on CPython 3.11),
    shuffled with `seed`; the first `limit` when given."""
    sentences = list(_all_stdlib_sentences())
    random.Random(seed).shuffle(sentences)
    return sentences[:limit] if limit is not None else sentences
