"""A tiny finished run (iris, MLP teacher trained first, one seed), shared by the report tests."""

import pytest

from kdforge.pipeline import run_recipe
from kdforge.recipe import recipe_from_dict

TINY = {
    "name": "tiny-report",
    "seeds": [0],
    "data": {"source": "sklearn:iris", "test_size": 0.3, "val_size": 0.2},
    "teacher": {"model": "builtin:mlp", "args": {"hidden": [32]},
                "train": {"epochs": 5, "lr": 0.01, "batch_size": 16, "progress": False}},
    "student": {"model": "builtin:mlp", "args": {"hidden": [4]}},
    "losses": [{"name": "kd", "weight": 0.9, "temperature": 2.0}, {"name": "ce", "weight": 0.1}],
    "train": {"epochs": 3, "batch_size": 16, "lr": 0.01, "progress": False, "select": "best"},
    "baseline": True,
}


@pytest.fixture
def tiny_recipe():
    return recipe_from_dict(dict(TINY))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run folder, RunResult) of a one-second run whose report has every section."""
    out = tmp_path_factory.mktemp("report") / "run"
    result = run_recipe(recipe_from_dict(dict(TINY)), out_dir=out)
    return out, result
