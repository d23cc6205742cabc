"""Build and save models from specs: `builtin:<name>`, `py:package.module:attr`, `hf:<dir or hub name>`.

A saved kdforge model is a folder with `model.safetensors` and `model.json` (how to rebuild it), so a
later recipe (or `kdforge eval`) can name it with `path:` and get the same module back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge import io
from kdforge.errors import KDForgeError, RecipeError
from kdforge.imports import is_py_ref, resolve_py_ref, untrusted
from kdforge.models import (
    builtin,  # noqa: F401  (registers the built-in architectures)
    retrieval,  # noqa: F401  (registers builtin:cross_encoder, builtin:dual_encoder)
    text,  # noqa: F401  (registers builtin:bert, builtin:bilstm, builtin:textcnn)
)
from kdforge.prefixes import SERVED_PREFIX
from kdforge.registry import MODELS
from kdforge.types import DataInfo

MODEL_FORMAT = "kdforge-model"
MODEL_FORMAT_VERSION = 1
OBJECT_PREFIX = "object:"  # model.json of a module given as a Python object: weights only


def build_model(spec: str, args: dict[str, Any], info: DataInfo | None, where: str,
                base_dir: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Instantiate a model; returns it with the full arguments used (saved to rebuild it later)."""
    args = dict(args)
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        cls = MODELS.get(name, where=f"{where}.model")
        if info is not None:
            args.setdefault("input_shape", list(info.input_shape))
            args.setdefault("num_classes", info.num_classes)
        model = _call_factory(cls, args, f"{where}.args", spec)
    elif is_py_ref(spec):
        factory = resolve_py_ref(spec, where=f"{where}.model", search_dir=base_dir)
        model = _call_factory(factory, args, f"{where}.args", spec)
    elif spec.startswith("hf:"):
        from kdforge.models.hf import load_hf_model

        model = load_hf_model(spec.removeprefix("hf:"), args, where, base_dir)
    elif spec.startswith("hf_config:"):  # a transformers class from its config (saved from_teacher students)
        from kdforge.models.hf import build_from_config

        model = build_from_config(spec.removeprefix("hf_config:"), args, where)
    elif spec.startswith(SERVED_PREFIX):  # kdforge.llm.served: the application builds it, for a teacher's cache only
        raise RecipeError(f"{where}.model: a served model ({spec}) can only be the teacher that builds a cache "
                          "(recipe.teacher.model with teacher.cache); give this model a factory or a path.")
    elif spec.startswith(OBJECT_PREFIX):  # saved from a module the Python API was given
        raise KDForgeError(
            f"{where}: {spec.removeprefix(OBJECT_PREFIX)} was given to kdforge as a Python object, so its folder "
            "holds its weights but no way to rebuild it. Build the model in Python and load model.safetensors "
            "into it (kdforge.models.load_weights), or pass the module itself.")
    elif spec == "from_teacher":
        raise RecipeError(f"{where}.model: 'from_teacher' needs the recipe's teacher; it is valid only as "
                          "recipe.student.model in a recipe run. Elsewhere give hf_student:<teacher folder>.")
    elif spec.startswith("hf_student:"):  # a transformers teacher with fewer layers, weights copied
        from kdforge.models.hf_student import load_student_from_teacher

        model = load_student_from_teacher(spec.removeprefix("hf_student:"), args, where, base_dir)
    else:
        raise RecipeError(
            f"{where}.model: {spec!r} has no known prefix. Use builtin:<name> "
            f"({', '.join(MODELS.names())}), py:package.module:attr, hf:<folder or hub name>, or "
            "hf_student:<teacher folder> (a smaller student built from a transformers teacher), "
            "hf_config:<transformers class> with args.config, or (students only) from_teacher."
        )
    if not isinstance(model, nn.Module):
        raise RecipeError(f"{where}.model: {spec!r} returned {type(model).__name__}, not a torch.nn.Module.")
    return model, args


def _call_factory(factory: Any, args: dict[str, Any], where: str, spec: str) -> nn.Module:
    try:
        return factory(**args)
    except TypeError as exc:
        raise RecipeError(f"{where}: {spec} does not accept these arguments ({exc}). Check the names.") from exc
    except ValueError as exc:
        raise RecipeError(f"{where}: {spec}: {exc}") from exc


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict with a message that names the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shaped = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shaped:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shaped:
            parts.append(f"wrong shapes {shaped[:3]}")
        raise KDForgeError(
            f"{where}: the weights do not fit the model ({'; '.join(parts)}). "
            "Check that the model arguments match the ones the weights were trained with."
        )
    model.load_state_dict(state)


@dataclass(frozen=True)
class CopiedWeights:
    """What `copy_matching_weights` copied: target tensor names, the total, and the name prefixes aligned."""

    names: list[str]
    total: int
    source_prefix: str
    target_prefix: str


def copy_matching_weights(source: dict[str, torch.Tensor], target: nn.Module) -> CopiedWeights:
    """Copy into `target` every tensor of `source` whose name and shape match, in place.

    Names may differ by one leading component, which is how one architecture's heads wrap the same base model
    (transformers' `base_model_prefix`: `bert.encoder...` in BertForMaskedLM and BertForSequenceClassification,
    `encoder...` in BertModel, `encoder.encoder...` in a SentenceEncoder). The alignment that copies the most
    tensors wins; the identity wins ties. Tensors of `target` without a counterpart keep their values.
    """
    own = target.state_dict()

    def heads(keys: list[str]) -> list[str]:
        return ["", *sorted({k.split(".", 1)[0] + "." for k in keys if "." in k})]

    best = CopiedWeights([], len(own), "", "")
    for a in heads(list(source)):
        for b in heads(list(own)):
            if a == b and a:
                continue  # the identity ("", "") already covers it
            pairs = [(k, b + k[len(a):]) for k in source if k.startswith(a)]
            names = [t for s, t in pairs if t in own and own[t].shape == source[s].shape]
            if len(names) > len(best.names):
                best = CopiedWeights(names, len(own), a, b)
    a, b = best.source_prefix, best.target_prefix
    with torch.no_grad():
        for name in best.names:
            own[name].copy_(source[a + name[len(b):]])
    return best


def save_model(model: nn.Module, folder: str | Path, spec: str, args: dict[str, Any], inputs: list[str],
               extra: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` and `model.json` (atomically, each) into `folder`."""
    folder = Path(folder)
    if not io.is_writer():  # the other processes of a distributed run: the main process saves the model
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "model.safetensors"
    io.save_tensors(weights, model.state_dict(), metadata={"format": MODEL_FORMAT})
    meta = {
        "format": MODEL_FORMAT,
        "version": MODEL_FORMAT_VERSION,
        "model": spec,
        "args": args,
        "inputs": inputs,
        "params": count_params(model),
        "sha256": io.sha256_file(weights),
        **(extra or {}),
    }
    io.write_json(folder / "model.json", meta)
    return folder


def load_saved_model(folder: str | Path, where: str, base_dir: str | Path | None = None,
                     trust_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by `save_model`, checking the weights' checksum.

    `model.json` is data: a `py:` reference in it (someone else's folder could name `py:os:system`) is imported
    only with `trust_code=True` or when the recipe being run names the same reference (`kdforge.imports.vouch`).
    An exported model whose `model.json` records `preprocess` comes back wrapped in it, taking raw inputs.
    """
    folder = Path(folder)
    meta_path, weights = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise KDForgeError(
            f"{where}: {str(folder)!r} is not a saved kdforge model (needs model.json and model.safetensors)."
        )
    meta = _read_meta(meta_path, where)
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_FORMAT_VERSION:
        raise KDForgeError(
            f"{where}: {str(meta_path)!r} is not a kdforge model file of version {MODEL_FORMAT_VERSION}."
        )
    if io.sha256_file(weights) != meta.get("sha256"):
        raise KDForgeError(f"{where}: {str(weights)!r} is corrupted (checksum mismatch). Retrain or restore it.")
    if not isinstance(meta.get("model"), str) or not isinstance(meta.get("args", {}), dict):
        raise KDForgeError(f"{where}: {str(meta_path)!r} has no valid 'model' (a string) and 'args' (a mapping).")
    with untrusted(repr(str(meta_path)), trust_code):
        model, args = build_model(meta["model"], meta.get("args", {}), None, where, base_dir)
    load_state_into(model, io.load_weights_file(weights, where), where)
    if meta.get("preprocess"):
        from kdforge.models.preprocess import with_preprocess

        model = with_preprocess(model, meta["preprocess"], where)
    return model, meta


def _read_meta(path: Path, where: str) -> dict[str, Any]:
    try:
        return io.read_json_object(path, "a kdforge model file", "restore the model folder")
    except KDForgeError as exc:
        raise KDForgeError(f"{where}: {exc}") from None


def object_spec(model: nn.Module) -> str:
    """The `model` entry of model.json for a module given as a Python object: its class, for the reader."""
    return f"{OBJECT_PREFIX}{type(model).__module__}.{type(model).__qualname__}"


def load_weights(model: nn.Module, folder: str | Path, where: str = "load_weights") -> nn.Module:
    """Load a saved model folder's checked weights into `model` (a module built in Python)."""
    folder = Path(folder)
    meta_path, weights = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise KDForgeError(f"{where}: {str(folder)!r} is not a saved kdforge model (needs model.json and "
                           "model.safetensors).")
    if io.sha256_file(weights) != json.loads(meta_path.read_text()).get("sha256"):
        raise KDForgeError(f"{where}: {str(weights)!r} is corrupted (checksum mismatch). Retrain or restore it.")
    load_state_into(model, io.load_weights_file(weights, where), where)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["CopiedWeights", "DataInfo", "build_model", "copy_matching_weights", "count_params", "load_saved_model",
           "load_state_into", "load_weights", "object_spec", "save_model"]
