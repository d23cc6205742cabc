"""Load the data a request names: a registered array source (`sklearn:digits`), a `py:` factory, or a text source
(`text:stdlib_topics`), split into what the teacher, the student and the scratch baseline train on.

Errors name the request's fields under `where`: the application passes "recipe.data", so a recipe user reads
"recipe.data.args: ..."; the library alone says "data.args: ...".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdforge.data import chat, lm, retrieval  # noqa: F401  (register their text sources)
from kdforge.data.adapters import SPLITS, as_tensor_data, bundle_from_splits
from kdforge.data.bundle import DataBundle, DataRequest, stratified_split, student_and_scratch_train
from kdforge.data.sources import TEXT_DATASETS, ArrayData
from kdforge.data.text import TextTokenizer
from kdforge.errors import KDForgeError, RecipeError
from kdforge.imports import is_py_ref, resolve_py_ref
from kdforge.registry import DATASETS
from kdforge.types import DataInfo, TensorData

Arrays = tuple[np.ndarray, np.ndarray]

# Arguments text_source fills in from the data request; its `args` cannot set them.
INJECTED_ARGS = ("test_size", "val_size", "seed", "student_labels", "transfer_set", "base_dir", "where")


def load_data(spec: DataRequest, base_dir: str | Path | None = None, where: str = "data") -> DataBundle:
    """Load, split and standardise the data `spec` names. `base_dir` (the recipe's folder) is where a `py:`
    module or a local tokenizer is looked up first."""
    if spec.source.startswith("text:"):  # token sequences, split and encoded by the source itself
        return text_source(spec, base_dir, where)
    parts, standardize_default, class_names = _load_raw(spec, base_dir, where)
    if any(isinstance(part, TensorData) for part in parts.values()):
        return _named_bundle(parts, spec, where)
    for key, (x, y) in parts.items():
        _check_arrays(x, y, f"{where} ({key})")
    if "all" in parts:
        x, y = parts["all"]
        x_rest, x_test, y_rest, y_test = stratified_split(x, y, spec.test_size, spec.split_seed)
        parts = {"train": (x_rest, y_rest), "test": (x_test, y_test)}
        if spec.val_size > 0:
            val_fraction = spec.val_size / (1 - spec.test_size)
            x_tr, x_val, y_tr, y_val = stratified_split(x_rest, y_rest, val_fraction, spec.split_seed)
            parts = {"train": (x_tr, y_tr), "val": (x_val, y_val), "test": (x_test, y_test)}
    x_train, y_train = parts["train"]
    num_classes = int(max(int(y.max()) for _, y in parts.values()) + 1)
    standardize = standardize_default if spec.standardize is None else spec.standardize
    mean = x_train.mean(axis=0, keepdims=True) if standardize else 0.0
    std = x_train.std(axis=0, keepdims=True) + 1e-8 if standardize else 1.0

    def tensors(key: str) -> TensorData:
        x, y = parts[key]
        x = ((x - mean) / std).astype(np.float32)
        return TensorData({"x": torch.from_numpy(x), "labels": torch.from_numpy(y.astype(np.int64))}, name=key)

    train = tensors("train")
    student_train, scratch_train = student_and_scratch_train(train, spec, where)
    # the statistics travel with the run and its exports (kdforge.models.preprocess), one value per feature
    preprocess = {"standardize": {"input": "x", "mean": mean[0].astype(np.float64).tolist(),
                                  "std": std[0].astype(np.float64).tolist()}} if standardize else {}
    return DataBundle(
        info=DataInfo(tuple(int(d) for d in parts["train"][0].shape[1:]), num_classes,
                      class_names if class_names is not None and len(class_names) == num_classes else None),
        teacher_train=train,
        student_train=student_train,
        scratch_train=scratch_train,
        val=tensors("val") if "val" in parts else None,
        test=tensors("test"),
        preprocess=preprocess,
    )


def _load_raw(spec: DataRequest, base_dir: str | Path | None,
              where: str) -> tuple[dict[str, Arrays | TensorData], bool, tuple[str, ...] | None]:
    """{'all': data} or {'train':..., 'test':..., ['val':...]}, the source's standardize default and its class
    names (an `ArrayData` source's, else None). Each part is
    (X, y) arrays, or a TensorData when a `py:` source gives named tensors (not just x and labels)."""
    source_where = f"{where}.source"
    if is_py_ref(spec.source):
        factory = resolve_py_ref(spec.source, where=source_where, search_dir=base_dir)
        try:
            out = factory(**spec.args)
        except TypeError as exc:
            raise RecipeError(f"{where}.args: {spec.source} does not accept these arguments ({exc}).") from exc
        if isinstance(out, Mapping):
            unknown = set(out) - set(SPLITS)
            if unknown or not {"train", "test"} <= set(out):
                raise RecipeError(f"{source_where}: {spec.source} returned keys {sorted(out)}; expected train, test, "
                                  "val.")
            return {k: _as_arrays(v, f"{source_where}[{k}]") for k, v in out.items()}, False, None
        data = _as_arrays(out, source_where)
        if isinstance(data, TensorData):
            raise RecipeError(f"{source_where}: {spec.source} returned one dataset of {sorted(data.tensors)}; only x "
                              "and labels can be split here. Return {'train': ..., 'test': ...} splits instead.")
        return {"all": data}, False, getattr(out, "class_names", None)
    loader = DATASETS.get(spec.source, where=source_where)
    if spec.args:
        raise RecipeError(f"{where}.args: built-in source {spec.source} takes no arguments; remove them.")
    raw = loader()
    return {"all": (raw.x, raw.y)}, raw.standardize, raw.class_names


def _as_arrays(obj: Any, where: str) -> Arrays | TensorData:
    """(X, y) arrays from an ArrayData, an (X, y) pair or any other form `as_tensor_data` takes that holds just x
    and labels (a TensorDataset, a Dataset of (x, y), a DataLoader), so all of them split and standardise alike;
    named tensors stay a TensorData."""
    if isinstance(obj, ArrayData):
        return obj.x, obj.y
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return np.asarray(obj[0]), np.asarray(obj[1])
    try:
        data = as_tensor_data(obj, where)
    except KDForgeError as exc:
        raise RecipeError(str(exc)) from None
    if set(data.tensors) - {"index"} == {"x", "labels"}:
        return data.tensors["x"].detach().cpu().numpy(), data.tensors["labels"].detach().cpu().numpy()
    return data


def _named_bundle(parts: Mapping[str, Arrays | TensorData], spec: DataRequest, where: str) -> DataBundle:
    """The bundle of a `py:` source's named-tensor splits, used as given (no standardisation)."""
    if spec.standardize:
        raise RecipeError(f"{where}.standardize: {spec.source} gives named tensors, not (X, y) features, so there "
                          "is nothing to standardise; remove it.")
    try:
        bundle = bundle_from_splits(parts, f"{where}.source")
    except KDForgeError as exc:
        raise RecipeError(str(exc)) from None
    bundle.student_train, bundle.scratch_train = student_and_scratch_train(bundle.teacher_train, spec, where)
    return bundle


def _check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise KDForgeError(f"{where}: {len(x)} inputs but {len(y)} labels; give one label per input.")
    if len(x) == 0:
        raise KDForgeError(f"{where}: the dataset is empty.")
    if not np.issubdtype(y.dtype, np.integer):
        raise KDForgeError(f"{where}: labels must be integer class ids; got dtype {y.dtype}.")
    if y.min() < 0:
        raise KDForgeError(f"{where}: labels must be >= 0; found {int(y.min())}.")


def text_source(spec: DataRequest, base_dir: str | Path | None = None, where: str = "data") -> DataBundle:
    """The DataBundle for `source: text:<name>` (a `TEXT_DATASETS` entry): args from `spec.args`, the split from
    test_size, val_size and split_seed, and `base_dir` (the recipe's folder) for a local `hf:` tokenizer.
    Sources with a `student_labels` parameter (labelled ones, like stdlib_topics) honour `spec.student_labels` and
    `spec.transfer_set`; the others reject `student_labels`."""
    name = spec.source.removeprefix("text:")
    source = TEXT_DATASETS.get(name, where=f"{where}.source")
    check_source_args(name, source, spec.args, where)
    params = inspect.signature(source).parameters
    kwargs = dict(spec.args, test_size=spec.test_size, val_size=spec.val_size, seed=spec.split_seed)
    if "student_labels" in params:
        kwargs.update(student_labels=spec.student_labels, transfer_set=spec.transfer_set)
    elif spec.student_labels is not None:
        raise RecipeError(f"{where}.student_labels: text:{name} has no labelled subset (its labels are per "
                          "token or there are none); remove it, or use text:stdlib_topics.")
    kwargs.update({key: value for key, value in (("base_dir", base_dir), ("where", where)) if key in params})
    try:
        bundle, tokenizer = source(**kwargs)
    except TypeError as exc:
        raise RecipeError(f"{where}.args: text:{name} does not accept these arguments ({exc}).") from exc
    if tokenizer is not None:  # saved with the run (tokenizer.json)
        bundle.tokenizer = (tokenizer if isinstance(tokenizer, TextTokenizer)
                            else TextTokenizer(tokenizer, f"{where}.args.tokenizer"))
    return bundle


def check_source_args(name: str, source: Callable[..., Any], args: Mapping[str, Any], where: str = "data") -> None:
    """A RecipeError naming `{where}.args` and listing the valid arguments when `args` has unknown keys."""
    valid = [p for p in inspect.signature(source).parameters if p not in INJECTED_ARGS]
    unknown = sorted(set(args) - set(valid))
    if unknown:
        from kdforge.validation import did_you_mean

        hint = did_you_mean(unknown[0], valid)
        raise RecipeError(f"{where}.args: text:{name} has no argument(s) {', '.join(map(repr, unknown))}.{hint} "
                          f"Valid arguments: {', '.join(valid)}. (The split comes from data.test_size, "
                          "data.val_size and data.split_seed.)")


__all__ = ["INJECTED_ARGS", "check_source_args", "load_data", "text_source"]
