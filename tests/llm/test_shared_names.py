"""One definition each: the served-model prefix (in a module light enough for the recipe schema and the model
builder) and the lookup of a local folder relative to the recipe."""

import subprocess
import sys
from pathlib import Path

import pytest


def test_the_served_prefix_has_one_light_home():
    import kdforge.llm.served as served
    import kdforge.models as models
    import kdforge.recipe as recipe
    from kdforge.prefixes import SERVED_PREFIX

    assert served.SERVED_PREFIX is recipe.SERVED_PREFIX is models.SERVED_PREFIX is SERVED_PREFIX
    code = "import sys, kdforge.prefixes; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_a_served_model_is_refused_outside_a_teacher_cache():
    from kdforge.errors import RecipeError
    from kdforge.recipe import TeacherSpec

    with pytest.raises((RecipeError, ValueError), match="cache"):
        TeacherSpec(model="served:http://localhost:1")


def test_local_folders_are_found_by_one_function(tmp_path):
    import kdforge.data.text as text
    import kdforge.models.hf as hf
    from kdforge.io import local_path

    assert hf.local_path is text.local_path is local_path
    (tmp_path / "tok").mkdir()
    assert local_path("tok", tmp_path) == tmp_path / "tok"
    assert local_path("elsewhere", tmp_path) == Path("elsewhere")
