"""Reports name classes ("setosa"), not ids, wherever the data has names or the recipe gives them."""

import json

import pytest

from kdforge.app.data import load_recipe_data
from kdforge.app.run import run_recipe
from kdforge.errors import RecipeError
from kdforge.recipe import recipe_from_dict


def test_report_names_the_classes_of_the_data(tmp_path, tiny_recipe_dict):
    run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"]["class_names"] == ["setosa", "versicolor", "virginica"]
    assert [r["name"] for r in report["per_class"]] == ["setosa", "versicolor", "virginica"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "| setosa (0) |" in markdown
    assert "| 0 |" not in markdown.split("Accuracy and per class")[1].split("##")[0]


def test_recipe_class_names_replace_the_source_names(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["data"]["class_names"] = ["small", "medium", "large"]
    recipe = recipe_from_dict(tiny_recipe_dict)
    assert load_recipe_data(recipe.data, None).info.class_names == ("small", "medium", "large")


@pytest.mark.parametrize("names", [["a", "b"], ["a", "a", "b"]])
def test_wrong_class_names_name_the_field(tiny_recipe_dict, names):
    tiny_recipe_dict["data"]["class_names"] = names
    with pytest.raises(RecipeError, match=r"recipe\.data\.class_names: .*3 classes"):
        load_recipe_data(recipe_from_dict(tiny_recipe_dict).data, None)


def test_text_file_labels_become_class_names(tmp_path):
    rows = [f"{text},{label}" for text, label in
            [("the cat sat on the mat", "animal"), ("a dog ran in the park", "animal"),
             ("stocks fell sharply today", "finance"), ("the bank raised rates", "finance")] * 10]
    (tmp_path / "texts.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    spec = recipe_from_dict({
        "name": "t", "data": {"source": "text:file", "args": {"path": "texts.csv", "seq_len": 8}},
        "teacher": {"model": "builtin:textcnn", "train": {"epochs": 1}}, "student": {"model": "builtin:textcnn"},
        "losses": [{"name": "kd"}]}).data
    assert load_recipe_data(spec, tmp_path).info.class_names == ("animal", "finance")
