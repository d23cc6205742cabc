"""Hugging Face `transformers` models from a local folder or a hub name (optional extra: `kdforge[hf]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from kdforge.errors import KDForgeError, RecipeError

_TASKS = {
    "base": "AutoModel",
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "masked_lm": "AutoModelForMaskedLM",
    "causal_lm": "AutoModelForCausalLM",
}


def load_hf_model(name: str, args: dict[str, Any], where: str, base_dir: str | Path | None) -> nn.Module:
    """`from_pretrained` on a local folder (relative to the recipe) or a hub name; `task` picks the head."""
    try:
        import transformers
    except ImportError as exc:
        raise RecipeError(f"{where}.model: hf: models need transformers; pip install 'kdforge[hf]'.") from exc
    args = dict(args)
    task = args.pop("task", "base")
    if task not in _TASKS:
        raise RecipeError(f"{where}.args.task: unknown task {task!r}; choose one of {', '.join(_TASKS)}.")
    local = Path(name).expanduser()
    if not local.is_absolute() and base_dir is not None and (Path(base_dir) / local).exists():
        local = Path(base_dir) / local
    source = str(local) if local.exists() else name
    auto = getattr(transformers, _TASKS[task])
    try:
        return auto.from_pretrained(source, **args)
    except (OSError, ValueError) as exc:
        raise KDForgeError(
            f"{where}.model: cannot load hf:{name} ({str(exc).splitlines()[0]}). "
            "Give a local folder with config.json and weights, or a hub name on a machine with network."
        ) from None
