"""A recipe's `data:` section to the library's `DataBundle` (the recipe's folder resolves local names)."""

from __future__ import annotations

from pathlib import Path

from kdforge.data import DataBundle, load_data
from kdforge.recipe import DataSpec


def load_recipe_data(spec: DataSpec, base_dir: str | Path | None, where: str = "recipe.data") -> DataBundle:
    """Load, split and standardise the data a recipe names; errors name the recipe field (`where`)."""
    return load_data(spec, base_dir, where=where)
