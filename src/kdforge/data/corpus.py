"""Unlabelled English text that exists on every machine with Python: sentences from the standard library's
docstrings, read with `ast` (no module is imported, so no code runs).

Used as a transfer set for text students (sentence embeddings, masked and causal language models) when no
corpus can be downloaded. `stdlib_documented_sentences()` also keeps where each sentence came from (its module
path and the qualified name of the documented object), which gives labelled tasks (kdforge.data.text).
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_SKIP_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "__pycache__"}


@dataclass(frozen=True)
class DocSentence:
    """One docstring sentence and what it documents: `module` is the dotted module path ('email.mime.text'),
    `qualname` the documented class or function inside it ('MIMEText.__init__'; '' for the module docstring)."""

    text: str
    module: str
    qualname: str


def _docstrings(path: Path) -> list[tuple[str, str]]:
    """(qualified name, docstring) of the module and of every class and function in it, outer first."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return []
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    found: list[tuple[str, str]] = []
    pending = deque([(tree, "")])
    while pending:  # breadth-first like ast.walk, so sentences (and which place a repeat counts as) keep their order
        node, qualname = pending.popleft()
        if (node is tree or isinstance(node, kinds)) and (doc := ast.get_docstring(node)):
            found.append((qualname, doc))
        for child in ast.iter_child_nodes(node):
            named = isinstance(child, kinds)
            pending.append((child, f"{qualname}.{child.name}".lstrip(".") if named else qualname))
    return found


def _module_path(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_sentence(text: str) -> bool:
    words = text.split()
    if not 6 <= len(words) <= 40 or not text[0].isupper() or text[-1] not in ".!?":
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    lower_words = sum(w[0].islower() for w in words if w[0].isalpha())
    return letters >= 0.9 * len(text) and lower_words >= 0.5 * len(words)


@lru_cache(maxsize=1)
def _all_documented() -> tuple[DocSentence, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, DocSentence] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _SKIP_PARTS & set(relative.parts):
            continue
        module = _module_path(relative)
        for qualname, doc in _docstrings(path):
            for paragraph in re.split(r"\n\s*\n", doc):
                text = " ".join(paragraph.split())
                for sentence in _SPLIT.split(text):
                    if _is_sentence(sentence):
                        seen.setdefault(sentence, DocSentence(sentence, module, qualname))  # first place wins
    return tuple(seen.values())


def _all_stdlib_sentences() -> tuple[str, ...]:
    return tuple(record.text for record in _all_documented())


def stdlib_documented_sentences() -> list[DocSentence]:
    """Every distinct docstring sentence with its module and documented object, in a fixed (file) order."""
    return list(_all_documented())


def stdlib_sentences(limit: int | None = None, seed: int = 0) -> list[str]:
    """Distinct English sentences from the standard library's docstrings (about 10,000 on CPython 3.11),
    shuffled with `seed`; the first `limit` when given."""
    sentences = list(_all_stdlib_sentences())
    random.Random(seed).shuffle(sentences)
    return sentences[:limit] if limit is not None else sentences
