"""A causal-LM recipe (data.source: text:stdlib_lm) runs end to end through the pipeline."""

import json
from pathlib import Path

import pytest

from kdforge.app.run import run_recipe
from kdforge.data import load_data
from kdforge.errors import RecipeError, UnknownNameError
from kdforge.recipe import DataSpec, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "token_kd" / "stdlib_gpt2_from_gpt2.yaml"


def test_shipped_recipe_trains_teacher_and_students_on_a_small_budget(tmp_path):
    recipe = load_recipe(RECIPE, overrides=[
        "data.args.limit=300", "data.args.vocab_size=300", "data.args.seq_len=24",
        "teacher.args.layers=1", "teacher.args.hidden=32", "teacher.args.vocab_size=300",
        "student.args.hidden=32", "student.args.vocab_size=300",
        "teacher.train.max_steps=3", "train.max_steps=3", "train.batch_size=8", "teacher.train.batch_size=8"])
    result = run_recipe(recipe, out_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert result is not None and report
    assert (tmp_path / "run" / "seed-0" / "student" / "model.safetensors").is_file()
    # DistillSpec ships in the report: the student measured as a draft model for the teacher
    draft = report["methods"]["0"]["token_kd"]
    from kdforge.lm.distillspec import expected_speedup

    assert 0.0 < draft["acceptance_rate"] <= 1.0 and draft["positions"] > 0
    assert draft["expected_speedup"]["3"] == pytest.approx(
        expected_speedup(draft["acceptance_rate"], 3, draft["cost_ratio"]))
    assert "speculative-decoding draft" in (tmp_path / "run" / "report.md").read_text()


def test_text_sources_check_their_names_and_arguments():
    with pytest.raises(UnknownNameError, match="text source 'stdlib'"):
        load_data(DataSpec(source="text:stdlib"), where="recipe.data")
    with pytest.raises(RecipeError, match="recipe.data.args"):
        load_data(DataSpec(source="text:stdlib_lm", args={"bogus": 1}), where="recipe.data")
    with pytest.raises(RecipeError, match="student_labels"):
        load_data(DataSpec(source="text:stdlib_lm", student_labels=10), where="recipe.data")


def test_pipeline_runs_gkd_with_its_registered_step(tmp_path, monkeypatch):
    import yaml

    import kdforge.losses.gkd as gkd
    from kdforge.recipe import recipe_from_dict

    calls = []
    rollouts = gkd.student_rollouts
    monkeypatch.setattr(gkd, "student_rollouts", lambda *a, **k: calls.append(1) or rollouts(*a, **k))
    data = yaml.safe_load(RECIPE.read_text())
    data["data"]["args"] = {"limit": 200, "vocab_size": 300, "seq_len": 24}
    for side, hidden in (("teacher", 32), ("student", 32)):
        data[side]["args"].update({"layers": 1, "hidden": hidden, "vocab_size": 300})
    data["teacher"]["train"].update({"max_steps": 2, "batch_size": 8})
    data["train"].update({"max_steps": 3, "batch_size": 8})
    data["losses"] = [{"name": "gkd", "lmbda": 1.0, "prompt_len": 3}]
    data["baseline"] = False
    run_recipe(recipe_from_dict(data, base_dir=RECIPE.parent), out_dir=tmp_path / "run")
    assert len(calls) == 3  # every optimizer step was on-policy
