"""End to end: a real teacher -> student distillation where KD is known to help, with its report."""

import json
from importlib import resources

import pytest
import torch

import kdforge
from kdforge.app.run import run_recipe
from kdforge.recipe import recipe_from_dict

DEMO = resources.files("kdforge") / "recipes" / "demo_digits.yaml"
FAST = ["seeds=[0]", "teacher.train.epochs=8", "train.epochs=12", "teacher.train.progress=false",
        "train.progress=false"]


def test_kd_beats_scratch_with_few_labels_and_a_transfer_set(tmp_path):
    recipe = kdforge.load_recipe(DEMO, overrides=FAST)
    result = run_recipe(recipe, out_dir=tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["teacher"]["accuracy"] > 0.95
    # measured: scratch 0.87-0.88, distilled 0.94-0.95 on seeds 0-3 with these settings
    assert report["student"]["accuracy"] >= report["scratch"]["accuracy"] + 0.03
    assert report["student"]["accuracy"] == pytest.approx(result.students[0].metrics["accuracy"])
    assert 0.5 < report["agreement_lower_95"] < report["agreement"] <= 1.0
    assert report["teacher"]["params"] > 20 * report["student"]["params"]
    for key in ("scratch", "student"):
        assert report[key]["params"] == 4810
    for name in ("report.md", "report.json", "plots/accuracy.png", "plots/curves.png", "recipe.resolved.yaml",
                 "environment.json", "teacher/model.safetensors", "seed-0/student/model.safetensors",
                 "seed-0/scratch/model.safetensors", "seed-0/student/log.jsonl"):
        assert (tmp_path / "run" / name).is_file(), name
    assert (tmp_path / "run" / "plots" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "With 95% confidence" in (tmp_path / "run" / "report.md").read_text()


def test_saved_student_reloads_to_the_same_predictions(tmp_path, tiny_recipe_dict):
    result = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    from kdforge.models import load_saved_model

    reloaded, meta = load_saved_model(tmp_path / "run" / "seed-0" / "student", "test")
    x = torch.randn(5, 4)
    original = result.students[0].model.eval()
    assert torch.equal(original(x), reloaded.eval()(x))
    assert meta["model"] == "builtin:mlp" and meta["params"] == sum(p.numel() for p in reloaded.parameters())


def test_resume_skips_finished_stages_and_finishes_interrupted_ones(tmp_path, tiny_recipe_dict, monkeypatch):
    reference = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "a")

    import kdforge.app.run as pipeline

    original = pipeline.train_scratch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_scratch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "b")
    monkeypatch.setattr(pipeline, "train_scratch", original)
    with pytest.raises(kdforge.KDForgeError, match="already holds a run. Pass --resume"):
        run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "b")
    resumed = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "b", resume=True)
    assert resumed.report["student"]["accuracy"] == reference.report["student"]["accuracy"]
    assert resumed.report["scratch"]["accuracy"] == reference.report["scratch"]["accuracy"]
    for key, value in reference.students[0].model.state_dict().items():
        assert torch.equal(value, resumed.students[0].model.state_dict()[key])


def test_resume_refuses_a_different_recipe(tmp_path, tiny_recipe_dict):
    run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "a")
    tiny_recipe_dict["data"]["split_seed"] = 1  # the teacher's data: a later-stage change reuses the teacher
    with pytest.raises(kdforge.KDForgeError, match="different recipe"):
        run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "a", resume=True)
