from importlib import resources
from pathlib import Path

import pytest
import yaml

from kdforge.errors import RecipeError, UnknownNameError
from kdforge.recipe import dump_recipe, load_recipe, parse_override, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "tree" not in p.parts)


def write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_recipes_validate(path):
    load_recipe(path)


def test_packaged_demo_recipe_validates():
    with resources.as_file(resources.files("kdforge") / "recipes" / "demo_digits.yaml") as path:
        recipe = load_recipe(path)
    assert recipe.data.student_labels == 100 and len(recipe.seeds) >= 3


def test_round_trip_through_dump(tiny_recipe_dict):
    recipe = recipe_from_dict(tiny_recipe_dict)
    again = recipe_from_dict(yaml.safe_load(dump_recipe(recipe)))
    assert dump_recipe(again) == dump_recipe(recipe)


def test_unknown_key_suggests_the_right_one(tiny_recipe_dict):
    tiny_recipe_dict["train"]["learning_rate"] = 0.1
    tiny_recipe_dict["train"]["epoch"] = 3
    with pytest.raises(RecipeError) as info:
        recipe_from_dict(tiny_recipe_dict)
    assert "recipe.train.epoch: unknown key 'epoch'. Did you mean 'epochs'?" in str(info.value)
    assert "recipe.train.learning_rate: unknown key" in str(info.value)


def test_wrong_type_names_the_field(tiny_recipe_dict):
    tiny_recipe_dict["train"]["batch_size"] = "many"
    with pytest.raises(RecipeError, match=r"recipe.train.batch_size: .*integer.*'many'"):
        recipe_from_dict(tiny_recipe_dict)


def test_yaml_1_1_exponent_string_is_read_as_a_number(tmp_path, tiny_recipe_dict):
    text = yaml.safe_dump(tiny_recipe_dict).replace("lr: 0.01", "lr: 5e-4", 1)
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.teacher.train.lr == pytest.approx(5e-4) or recipe.train.lr == pytest.approx(5e-4)


def test_unknown_loss_suggests_close_name(tiny_recipe_dict):
    tiny_recipe_dict["losses"][0]["name"] = "kdd"
    with pytest.raises(UnknownNameError, match=r"recipe.losses\[0\].name: unknown loss 'kdd'. Did you mean 'kd'"):
        recipe_from_dict(tiny_recipe_dict)


def test_bad_loss_parameter_and_value(tiny_recipe_dict):
    tiny_recipe_dict["losses"][0]["temprature"] = 2.0
    with pytest.raises(RecipeError, match=r"KDLoss has no parameter 'temprature'. Did you mean 'temperature'\?"):
        recipe_from_dict(tiny_recipe_dict)
    del tiny_recipe_dict["losses"][0]["temprature"]
    tiny_recipe_dict["losses"][0]["temperature"] = -1
    with pytest.raises(RecipeError, match=r"recipe.losses\[0\]: The 'temperature' parameter of KDLoss must be > 0"):
        recipe_from_dict(tiny_recipe_dict)


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(RecipeError, match="malformed YAML at line 2"):
        load_recipe(write(tmp_path, "name: x\nteacher: {model: a: b}\n"))


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"))


def test_missing_file():
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("/nonexistent/recipe.yaml")


def test_model_needs_exactly_one_source(tiny_recipe_dict):
    tiny_recipe_dict["student"] = {"args": {}}
    with pytest.raises(RecipeError, match="recipe.student: give exactly one of 'model'"):
        recipe_from_dict(tiny_recipe_dict)


def test_overrides(tiny_recipe_dict):
    recipe = recipe_from_dict(tiny_recipe_dict, overrides=["train.lr=3e-3", "losses.0.weight=0.5", "seeds=[1, 2]"])
    assert recipe.train.lr == pytest.approx(3e-3)
    assert recipe.losses[0].weight == 0.5 and recipe.seeds == [1, 2]
    with pytest.raises(RecipeError, match="key.path=value"):
        parse_override("train.lr")


def test_duplicate_loss_terms(tiny_recipe_dict):
    tiny_recipe_dict["losses"].append({"name": "kd"})
    with pytest.raises(RecipeError, match="appear more than once"):
        recipe_from_dict(tiny_recipe_dict)
