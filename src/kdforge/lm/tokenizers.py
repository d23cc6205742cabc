"""Language-model tokenizers: loading one, the project's chat template, and what a teacher/student pair allows.

A causal-LM source (`text:lm_file`) and `kdforge doctor` both need a transformers tokenizer with its chat
template: `hf:<folder or hub name>` (what `save_pretrained` wrote; a folder is looked up relative to the recipe
first). The data source also offers `bpe` (`kdforge.data.chat.bpe_chat_tokenizer`), trained in-process with the
project's `CHAT_TEMPLATE`.

Token-level KD compares two next-token distributions id by id, so how the two tokenizers relate decides which
distillation a pair allows (`vocabulary_case`):

    identical   the same token -> id map
    superset    every student token has the same id in the teacher, which has more (`prefix`: the student's ids
                are 0..n-1, so `vocab_size: n` on token_kd compares the shared part)
    foreign     anything else: sequence-level KD, or a cross-tokenizer loss
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kdforge.errors import RecipeError
from kdforge.io import local_path

# Role tags open every turn; the assistant's reply and its EOS sit inside {% generation %} so transformers can
# return the assistant mask, and nothing after the EOS belongs to the turn (prefix rendering agrees with it).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# A conversation every check renders (the templates' output is compared on it).
PROBE: list[dict[str, str]] = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What does it return?"},
    {"role": "assistant", "content": "The value."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "Nothing else."},
]

VocabCase = Literal["identical", "superset", "prefix", "foreign"]


def load_lm_tokenizer(spec: str, base_dir: str | Path | None = None, where: str = "data.args.tokenizer"):
    """The tokenizer `hf:<folder or hub name>` names, with a padding token (its EOS when it has none: padded
    positions carry no labels and no attention, so the id does not matter)."""
    if not isinstance(spec, str) or not spec.startswith("hf:"):
        raise RecipeError(f"{where}: unknown tokenizer {spec!r}; use 'hf:<folder with tokenizer files>' (what "
                          "save_pretrained writes).")
    tokenizer = _from_pretrained(spec.removeprefix("hf:"), base_dir, where)
    return with_padding(tokenizer, spec, where)


def with_padding(tokenizer: Any, spec: str, where: str) -> Any:
    """`tokenizer` with a padding token: its EOS when it has none."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RecipeError(f"{where}: the tokenizer {spec!r} has neither a padding nor an end-of-sequence "
                              "token; give it one (pad_token in tokenizer_config.json).")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def has_tokenizer_files(folder: Path) -> bool:
    """Whether `save_pretrained` wrote a tokenizer into `folder` (tokenizer.json or a slow tokenizer's config)."""
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def _from_pretrained(name: str, base_dir: str | Path | None, where: str):
    local = local_path(name, base_dir)
    if not local.exists() and not local.is_absolute() and base_dir is not None:
        local = Path(base_dir) / local  # named in messages as the folder that was looked for
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(local) if local.exists() else name)
    except ImportError:
        raise RecipeError(f"{where}: hf: tokenizers need transformers; pip install 'kdforge[hf]'.") from None
    except (OSError, ValueError) as exc:
        missing = "" if local.exists() else f"; there is no folder {str(local)!r}"
        raise RecipeError(f"{where}: cannot load hf:{name} ({str(exc).splitlines()[0]}{missing}). Give a local "
                          "folder with the tokenizer files (save_pretrained; relative to the recipe's folder), or a "
                          "hub name on a machine with network.") from None


@dataclass(frozen=True)
class VocabComparison:
    """How the student's tokenizer relates to the teacher's, with the numbers a message needs."""

    case: VocabCase
    teacher_size: int
    student_size: int
    differing: int  # student tokens missing from the teacher or with another id there


def vocabulary_case(teacher: Any, student: Any) -> VocabComparison:
    """Compare two tokenizers' token -> id maps (added tokens included); see the module docstring."""
    t_vocab, s_vocab = teacher.get_vocab(), student.get_vocab()
    differing = sum(1 for token, i in s_vocab.items() if t_vocab.get(token) != i)
    if differing == 0 and len(t_vocab) == len(s_vocab):
        case: VocabCase = "identical"
    elif differing == 0:
        case = "prefix" if set(s_vocab.values()) == set(range(len(s_vocab))) else "superset"
    else:
        case = "foreign"
    return VocabComparison(case, len(t_vocab), len(s_vocab), differing)


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """`messages` as the tokenizer's chat template writes them (text, special tokens as text)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def duplicated_specials(tokenizer: Any) -> list[str]:
    """'BOS' / 'EOS' when the chat template writes that token and encoding the rendered text with the tokenizer's
    defaults (`tokenizer(text)`, add_special_tokens=True) adds it again: such code trains on [BOS][BOS] rows."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    ids = tokenizer(render(tokenizer, PROBE))["input_ids"]
    found = []
    if tokenizer.bos_token_id is not None and ids[:2] == [tokenizer.bos_token_id] * 2:
        found.append("BOS")
    if tokenizer.eos_token_id is not None and ids[-2:] == [tokenizer.eos_token_id] * 2:
        found.append("EOS")
    return found


def template_difference(teacher: Any, student: Any) -> str | None:
    """None when both tokenizers render the probe conversation alike (or neither has a template); else what
    differs, in a few words."""
    t_template, s_template = getattr(teacher, "chat_template", None), getattr(student, "chat_template", None)
    if not t_template and not s_template:
        return None
    if not t_template or not s_template:
        return f"only the {'teacher' if t_template else 'student'} has a chat template"
    t_text, s_text = render(teacher, PROBE), render(student, PROBE)
    if t_text == s_text:
        return None
    pairs = enumerate(zip(t_text, s_text, strict=False))
    at = next((i for i, (a, b) in pairs if a != b), min(len(t_text), len(s_text)))
    return (f"their chat templates render the same conversation differently from character {at} on "
            f"(teacher {t_text[at:at + 24]!r}, student {s_text[at:at + 24]!r})")


__all__ = ["CHAT_TEMPLATE", "PROBE", "VocabComparison", "duplicated_specials", "has_tokenizer_files",
           "load_lm_tokenizer", "render", "template_difference", "vocabulary_case", "with_padding"]
