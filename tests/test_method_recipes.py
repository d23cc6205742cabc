"""The shipped recipes of the tensor-level methods pass preflight and take a few optimizer steps on digits.

Untrained teacher and student built from each recipe's model specs (no teacher training: seconds, not
minutes); what this catches is a recipe whose taps, pairs, shapes or loss arguments do not fit its models.
The real runs (teacher trained first, full budget) are `kdforge distill recipes/<name>/...yaml`.
"""

from pathlib import Path

import pytest
import torch

from kdforge.app.build import build_loss, build_schedule
from kdforge.app.preflight import preflight
from kdforge.data import load_data
from kdforge.models import build_model
from kdforge.recipe import load_recipe
from kdforge.train.module import DistillModule, OnlineTeacher, standard_step

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["ab", "at", "crd", "dkd", "fitnet", "pkd", "rkd", "sp"]


@pytest.fixture(scope="module")
def digits():
    return load_data(load_recipe(ROOT / "recipes" / "dkd" / "digits_mlp_from_cnn.yaml").data)


@pytest.mark.parametrize("method", METHODS)
def test_recipe_passes_preflight_and_trains_a_few_steps(method, digits):
    (path,) = sorted((ROOT / "recipes" / method).glob("digits_*.yaml"))  # text recipes: test_text_recipes.py
    recipe = load_recipe(path)
    assert method in {term.name for term in recipe.losses}
    teacher, _ = build_model(recipe.teacher.model, recipe.teacher.args, digits.info, "recipe.teacher")
    student, _ = build_model(recipe.student.model, recipe.student.args, digits.info, "recipe.student")
    loss = build_loss(recipe.losses)
    schedule = build_schedule(recipe.losses, loss)
    module = DistillModule(student, loss, recipe.student.inputs, recipe.taps.student)
    online = OnlineTeacher(teacher, recipe.teacher.inputs, recipe.taps.teacher)
    preflight(module, online, digits.student_train, (set(recipe.taps.student), set(recipe.taps.teacher)),
              schedule=schedule)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    for step in range(3):
        schedule.select(loss, step)
        batch = digits.student_train[torch.arange(step * 32, step * 32 + 32)]
        terms = standard_step(module, online, batch)
        assert torch.isfinite(terms["loss"]) and method in terms
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
