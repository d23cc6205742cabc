"""Write chat.jsonl: a few hundred conversations made from the standard library's docstrings (no download).

Each conversation asks what a documented function, class or module does; the assistant answers with a sentence
of its docstring, and a follow-up turn ("More?") is answered with the next sentence when there is one.

    python recipes/llm_chat/make_data.py            # writes recipes/llm_chat/chat.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from kdforge.data.corpus import stdlib_documented_sentences

HERE = Path(__file__).resolve().parent


def conversations(count: int = 400, seed: int = 0) -> list[dict]:
    """`count` conversations, one per documented object, chosen with `seed` from those with short sentences."""
    by_object: dict[tuple[str, str], list[str]] = {}
    for record in stdlib_documented_sentences():
        if 20 <= len(record.text) <= 120:
            by_object.setdefault((record.module, record.qualname), []).append(record.text)
    objects = sorted(by_object)
    random.Random(seed).shuffle(objects)
    out = []
    for module, qualname in objects[:count]:
        name = f"{module}.{qualname}" if qualname else module
        sentences = by_object[(module, qualname)]
        messages = [{"role": "user", "content": f"What does {name} do?"},
                    {"role": "assistant", "content": sentences[0]}]
        if len(sentences) > 1:
            messages += [{"role": "user", "content": "More?"}, {"role": "assistant", "content": sentences[1]}]
        out.append({"messages": messages})
    return out


if __name__ == "__main__":
    rows = conversations()
    (HERE / "chat.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"wrote {len(rows)} conversations to {HERE / 'chat.jsonl'}")
