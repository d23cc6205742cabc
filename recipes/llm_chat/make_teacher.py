"""Write the teacher folder this recipe distils from, as `save_pretrained` writes any causal LM: a tiny Llama
config with random weights (the recipe's `teacher.train` trains it on the chat data first) and, beside it, a
byte-level BPE tokenizer trained on the conversations' text, with the project's chat template
(`kdforge.lm.tokenizers.CHAT_TEMPLATE`, generation markers around the assistant's replies).

    python recipes/llm_chat/make_teacher.py          # writes recipes/llm_chat/teacher/

Any other causal LM saved with save_pretrained works the same way (point teacher.model and
data.args.tokenizer at its folder, and size the student's vocab_size to its vocabulary).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kdforge.data.chat import bpe_chat_tokenizer
from kdforge.llm.data import tiny_causal_lm

HERE = Path(__file__).resolve().parent
VOCAB_SIZE = 512  # the student's vocab_size in the recipe


def make_teacher(folder: Path, chat_file: Path = HERE / "chat.jsonl", layers: int = 2, hidden: int = 64) -> Path:
    """Save the tokenizer and the tiny teacher into `folder`; returns it."""
    records = [json.loads(line) for line in chat_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [m["content"] for record in records for m in record["messages"]]
    tokenizer = bpe_chat_tokenizer(texts, VOCAB_SIZE)
    model = tiny_causal_lm("llama", layers=layers, hidden=hidden, heads=4, vocab_size=VOCAB_SIZE, max_positions=256)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    out = make_teacher(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "teacher")
    print(f"wrote the teacher and its tokenizer to {out}")
