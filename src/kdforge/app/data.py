"""A recipe's `data:` section to the library's `DataBundle` (the recipe's folder resolves local names), and the
record of its preprocessing that a run folder keeps (`preprocess.json`) for exports to ship."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from kdforge import io
from kdforge.data import DataBundle, load_data
from kdforge.errors import RecipeError
from kdforge.recipe import DataSpec
from kdforge.types import DataInfo

PREPROCESS_FILE = "preprocess.json"


def load_recipe_data(spec: DataSpec, base_dir: str | Path | None, where: str = "recipe.data") -> DataBundle:
    """Load, split and standardise the data a recipe names; errors name the recipe field (`where`)."""
    data = load_data(spec, base_dir, where=where)
    if spec.class_names is not None:
        data.info = with_class_names(data.info, spec.class_names, f"{where}.class_names")
    return data


def with_class_names(info: DataInfo, names: list[str], where: str) -> DataInfo:
    """`info` with the user's class names (one per class id, checked against the data's classes)."""
    if not info.num_classes:
        raise RecipeError(f"{where}: this data has no classes to name (an embedding or language-model source); "
                          "remove class_names.")
    if len(names) != info.num_classes or len(set(names)) != len(names):
        raise RecipeError(f"{where}: {len(names)} names for {info.num_classes} classes (ids 0.."
                          f"{info.num_classes - 1}); give one distinct name per class id.")
    return replace(info, class_names=tuple(str(n) for n in names))


def save_preprocess(data: DataBundle, out: Path) -> None:
    """`<run>/preprocess.json`: what was done to the raw inputs (standardisation statistics of the training split;
    `{}` when nothing), so `kdforge export` ships it and a shipped model takes raw inputs."""
    if io.is_writer():
        io.write_json(out / PREPROCESS_FILE, data.preprocess)


def saved_preprocess(run_dir: Path, data: DataBundle | None = None) -> dict[str, Any]:
    """The preprocessing a run applied: its `preprocess.json`, else (a run from before it was written) the data's,
    recomputed from the same split."""
    path = run_dir / PREPROCESS_FILE
    if path.is_file():
        return io.read_json_object(path, "a preprocessing record", "restore it or rerun the recipe")
    return dict(data.preprocess) if data is not None else {}
