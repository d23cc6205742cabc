"""Per-term step windows: a hint stage first, then KD (FitNets' two stages), from a recipe."""

import json

import pytest
import torch

from kdforge.app.run import run_recipe
from kdforge.errors import RecipeError
from kdforge.losses.base import Outputs, Targets, WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.losses.kd import KDLoss
from kdforge.recipe import recipe_from_dict
from kdforge.train.schedule import TermSchedule


def test_windows_switch_terms_on_and_off():
    loss = WeightedSum({"kd": KDLoss(2.0), "ce": CELoss()}, {"kd": 1.0, "ce": 1.0})
    schedule = TermSchedule(loss.terms, {"kd": (3, None), "ce": (0, 3)})
    s, t = Outputs(logits=torch.randn(4, 3)), Outputs(logits=torch.randn(4, 3))
    targets = Targets(labels=torch.tensor([0, 1, 2, 0]))
    schedule.select(loss, 2)
    early = loss(s, t, targets)
    schedule.select(loss, 3)
    late = loss(s, t, targets)
    assert set(early) == {"loss", "ce"} and set(late) == {"loss", "kd"}
    assert early["loss"].item() == pytest.approx(CELoss()(s, t, targets).item())
    assert late["loss"].item() == pytest.approx(KDLoss(2.0)(s, t, targets).item())
    with loss.all_terms():
        assert set(loss(s, t, targets)) == {"loss", "ce", "kd"}
    assert set(loss(s, t, targets)) == {"loss", "kd"}  # the schedule's selection is back


def test_two_stage_recipe_logs_each_stage(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["losses"] = [
        {"name": "logit_mse", "weight": 1.0, "stop_step": 6},
        {"name": "kd", "weight": 1.0, "start_step": 6},
    ]
    tiny_recipe_dict["baseline"] = False
    run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "seed-0" / "student" / "log.jsonl").open()]
    steps = [r for r in records if "train/loss" in r]
    assert all("train/logit_mse" in r and "train/kd" not in r for r in steps[:6])
    assert all("train/kd" in r and "train/logit_mse" not in r for r in steps[6:])


def test_bad_windows_are_recipe_errors(tiny_recipe_dict):
    tiny_recipe_dict["losses"] = [{"name": "kd", "start_step": 5, "stop_step": 5}]
    with pytest.raises(RecipeError, match=r"recipe.losses\[0\]: stop_step \(5\) must be greater than start_step"):
        recipe_from_dict(tiny_recipe_dict)
    tiny_recipe_dict["losses"] = [{"name": "kd", "start_step": 5}]
    with pytest.raises(RecipeError, match="no term is active at step 0"):
        recipe_from_dict(tiny_recipe_dict)
