import pytest
import torch
from torch import nn

from kdforge.app.run import run_recipe
from kdforge.errors import RecipeError
from kdforge.models.ensemble import EnsembleTeacher
from kdforge.recipe import recipe_from_dict


def test_weighted_average_of_logits():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    x = torch.randn(4, 3)
    ensemble = EnsembleTeacher([a, b], weights=[1.0, 3.0])
    assert torch.allclose(ensemble(x), 0.25 * a(x) + 0.75 * b(x), atol=1e-6)
    assert torch.allclose(EnsembleTeacher([a, b])(x), (a(x) + b(x)) / 2, atol=1e-6)


def test_bad_ensembles():
    with pytest.raises(ValueError, match="at least two members"):
        EnsembleTeacher([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="one positive weight per member"):
        EnsembleTeacher([nn.Linear(2, 2), nn.Linear(2, 2)], weights=[1.0, 0.0])


def test_ensemble_recipe_trains_and_saves_each_member(tmp_path, tiny_recipe_dict):
    member = tiny_recipe_dict["teacher"]
    tiny_recipe_dict["teacher"] = {"members": [member, {**member, "train": {**member["train"], "seed": 1}}]}
    tiny_recipe_dict["baseline"] = False
    result = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    assert isinstance(result.teacher, EnsembleTeacher)
    for i in range(2):
        assert (tmp_path / "run" / "teacher" / f"member-{i}" / "model.safetensors").is_file()
    first, second = result.teacher.members
    assert not torch.equal(first.head.weight, second.head.weight)  # different seeds, different members


def test_ensemble_recipe_errors(tiny_recipe_dict):
    member = tiny_recipe_dict["teacher"]
    tiny_recipe_dict["teacher"] = {"members": [member, member], "member_weights": [1.0]}
    with pytest.raises(RecipeError, match="recipe.teacher: 1 member_weights for 2 members"):
        recipe_from_dict(tiny_recipe_dict)
    tiny_recipe_dict["teacher"] = {"members": [member, member], "model": "builtin:mlp"}
    with pytest.raises(RecipeError, match="an ensemble teacher gives 'members' only"):
        recipe_from_dict(tiny_recipe_dict)
