"""A tiny finished run (iris, MLP teacher trained first, one seed), shared by the report tests."""

import pytest
from tests.tiny import tiny_recipe as tiny_recipe_data

from kdforge.app.run import run_recipe
from kdforge.recipe import recipe_from_dict

TINY = tiny_recipe_data(name="tiny-report")
TINY["train"]["select"] = "best"


@pytest.fixture
def tiny_recipe():
    return recipe_from_dict(dict(TINY))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run folder, RunResult) of a one-second run whose report has every section."""
    out = tmp_path_factory.mktemp("report") / "run"
    result = run_recipe(recipe_from_dict(dict(TINY)), out_dir=out)
    return out, result
