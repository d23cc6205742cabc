"""A recipe's `data:` section to the library's `DataBundle` (the recipe's folder resolves local names), and the
record of its preprocessing that a run folder keeps (`preprocess.json`) for exports to ship."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdforge import io
from kdforge.data import DataBundle, load_data
from kdforge.errors import KDForgeError
from kdforge.recipe import DataSpec

PREPROCESS_FILE = "preprocess.json"


def load_recipe_data(spec: DataSpec, base_dir: str | Path | None, where: str = "recipe.data") -> DataBundle:
    """Load, split and standardise the data a recipe names; errors name the recipe field (`where`)."""
    return load_data(spec, base_dir, where=where)


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
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise KDForgeError(f"{str(path)!r} is not valid JSON; restore it or rerun the recipe.") from None
        if not isinstance(record, dict):
            raise KDForgeError(f"{str(path)!r} is not a preprocessing record (a JSON object).")
        return record
    return dict(data.preprocess) if data is not None else {}
