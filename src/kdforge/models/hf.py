"""Hugging Face `transformers` models from a local folder or a hub name (`hf:`), or from a class name and a config
(`hf_config:`, random weights: how students built from a teacher are saved). Optional extra: `kdforge[hf]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from kdforge.errors import KDForgeError, RecipeError
from kdforge.io import local_path

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
    local = local_path(name, base_dir)
    source = str(local) if local.exists() else name
    auto = getattr(transformers, _TASKS[task])
    try:
        return auto.from_pretrained(source, **args)
    except (OSError, ValueError) as exc:
        raise KDForgeError(
            f"{where}.model: cannot load hf:{name} ({str(exc).splitlines()[0]}). "
            "Give a local folder with config.json and weights, or a hub name on a machine with network."
        ) from None


_CONFIG_ARGS = ("revision", "subfolder", "cache_dir", "local_files_only", "token", "trust_remote_code")
_STRUCTURE_ARGS = ("attn_implementation", "trust_remote_code")
_DTYPE_ARGS = ("dtype", "torch_dtype")  # left to the caller: the process that loads the weights sets the dtypes


def hf_structure(name: str, args: dict[str, Any], where: str, base_dir: str | Path | None) -> nn.Module:
    """The model `load_hf_model` loads, built from its config alone, without reading its weights: for a process
    that receives them from another (under `torch.device("meta")` it allocates nothing; `from_pretrained` refuses
    that device). Its dtypes are the config's; `dtype` args are left to the caller, which gives it the loaded
    model's (`train.sharding.shard_frozen_from_rank0`). Raises KDForgeError for other args only `from_pretrained`
    understands: the caller then loads it whole."""
    import transformers

    args = dict(args)
    task = args.pop("task", "base")
    if task not in _TASKS:
        raise RecipeError(f"{where}.args.task: unknown task {task!r}; choose one of {', '.join(_TASKS)}.")
    unknown = sorted(set(args) - set(_CONFIG_ARGS) - set(_STRUCTURE_ARGS) - set(_DTYPE_ARGS))
    if unknown:
        raise KDForgeError(f"{where}.args: {unknown} apply to from_pretrained only, so the model cannot be built "
                           "from its config alone.")
    local = local_path(name, base_dir)
    source = str(local) if local.exists() else name
    config = transformers.AutoConfig.from_pretrained(source, **{k: v for k, v in args.items() if k in _CONFIG_ARGS})
    build = {k: v for k, v in args.items() if k in _STRUCTURE_ARGS}
    return getattr(transformers, _TASKS[task]).from_config(config, **build)


def build_from_config(class_name: str, args: dict[str, Any], where: str) -> nn.Module:
    """`hf_config:<transformers model class>` with `args: {config: {...}}`: the model from its config alone.

    Only the weights a kdforge model folder holds are needed afterwards, so a student built from a teacher
    (`from_teacher`) is saved this way and rebuilds without the teacher."""
    try:
        import transformers
    except ImportError as exc:
        raise RecipeError(f"{where}.model: hf_config: models need transformers; pip install 'kdforge[hf]'.") from exc
    cls = getattr(transformers, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise RecipeError(f"{where}.model: hf_config:{class_name} is not a transformers model class; give one such "
                          "as hf_config:BertForSequenceClassification.")
    args = dict(args)
    config = args.pop("config", None)
    if args:
        raise RecipeError(f"{where}.args: hf_config: takes only 'config'; remove {sorted(args)}.")
    if not isinstance(config, dict):
        raise RecipeError(f"{where}.args.config: hf_config: needs the model's config as a mapping "
                          "(what config.to_dict() gives).")
    try:
        return cls(cls.config_class.from_dict(config))
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{where}.args.config: {class_name} cannot be built from this config ({exc}).") from None


def config_spec(model: nn.Module) -> tuple[str, dict[str, Any]]:
    """The `hf_config:` spec and args that rebuild `model`'s architecture (weights are saved beside them)."""
    return f"hf_config:{type(model).__name__}", {"config": json.loads(model.config.to_json_string(use_diff=False))}
