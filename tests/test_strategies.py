"""Self- and online distillation through recipes: born-again generations, mutual learning, multi-exit."""

import json

import torch

from kdforge.app.run import run_recipe
from kdforge.recipe import recipe_from_dict


def test_born_again_generations_teach_each_other(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict.update(generations=3, baseline=False)
    tiny_recipe_dict["student"] = {"model": "builtin:mlp", "args": {"hidden": [32]}}  # the teacher's architecture
    result = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    seed_dir = tmp_path / "run" / "seed-0"
    assert (seed_dir / "generation-1" / "model.safetensors").is_file()
    assert (seed_dir / "generation-2" / "model.safetensors").is_file()
    assert len(result.students[0].metrics["generation_accuracy"]) == 3
    assert result.students[0].metrics["generation_accuracy"][-1] == result.students[0].metrics["accuracy"]
    first = json.loads((seed_dir / "generation-1" / "train_summary.json").read_text())
    assert first["steps"] > 0


def test_mutual_learning_trains_the_peer_with_the_student(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["teacher"] = {"model": "builtin:mlp", "args": {"hidden": [32]}, "online": True}
    tiny_recipe_dict["losses"] = [{"name": "kd", "temperature": 1.0}, {"name": "ce"}]
    result = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    peer_dir = tmp_path / "run" / "seed-0" / "peer"
    assert (peer_dir / "model.safetensors").is_file()
    from kdforge.models import load_saved_model

    peer, _ = load_saved_model(peer_dir, "peer")
    assert torch.equal(peer.head.weight, result.teacher.head.weight)  # the report's teacher is seed 0's peer
    log = [json.loads(line) for line in (tmp_path / "run" / "seed-0" / "student" / "log.jsonl").open()]
    assert any("train/peer_kd" in r for r in log)
    assert result.report["teacher"]["accuracy"] > 0.5  # the peer learned, it is not the untrained start


def test_multi_exit_recipe_measures_the_early_exit_curve(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["student"] = {"model": "builtin:mlp", "args": {"hidden": [16, 8]}}
    tiny_recipe_dict["taps"] = {"student": {"early": "blocks.0"}}
    tiny_recipe_dict["losses"] = [{"name": "ce"}, {"name": "multi_exit", "exits": ["early"]}]
    tiny_recipe_dict["baseline"] = False
    run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    folder = tmp_path / "run" / "seed-0" / "student"
    curve = json.loads((folder / "method_metrics.json").read_text())["multi_exit"]["curve"]
    assert curve[0]["threshold"] == 0.0 and curve[0]["mean_exit"] == 1.0
    assert all(0.0 <= point["mean_exit"] <= 1.0 for point in curve)
    assert (folder / "loss_state.safetensors").is_file()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["methods"]["0"]["multi_exit"]["curve"] == curve
    assert "early exit at early" in (tmp_path / "run" / "report.md").read_text()


def test_mutual_learning_seeds_are_independent(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["teacher"] = {"model": "builtin:mlp", "args": {"hidden": [32]}, "online": True}
    tiny_recipe_dict.update(baseline=False, seeds=[0, 1])
    both = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "both")
    tiny_recipe_dict["seeds"] = [1]
    alone = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "alone")
    for key, value in alone.students[1].model.state_dict().items():  # seed 1 never sees seed 0's trained peer
        assert torch.equal(value, both.students[1].model.state_dict()[key]), key


def test_mutual_learning_refuses_feature_terms(tiny_recipe_dict, tmp_path):
    import pytest

    from kdforge.errors import RecipeError

    tiny_recipe_dict["teacher"] = {"model": "builtin:mlp", "args": {"hidden": [32]}, "online": True}
    tiny_recipe_dict["taps"] = {"student": {"h": "blocks.0"}, "teacher": {"h": "blocks.0"}}
    tiny_recipe_dict["losses"] = [{"name": "kd"}, {"name": "fitnet", "pairs": [["h", "h"]]}]
    with pytest.raises(RecipeError, match="only logit-level losses"):
        run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
