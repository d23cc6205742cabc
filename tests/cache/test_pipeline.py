"""The cache inside a run: same student as online KD, cache-only recipes, the `kdforge cache` command."""

from importlib import resources

import pytest
import torch
import yaml
from safetensors.torch import save_file

from kdforge.app.run import distill_student, run_recipe
from kdforge.app.teacher import run_teacher
from kdforge.cache.teacher import CachedTeacher
from kdforge.cli import main
from kdforge.data import load_data
from kdforge.errors import RecipeError
from kdforge.evaluate import accuracy_summary, predict_logits
from kdforge.models.builtin import MLP
from kdforge.recipe import load_recipe, recipe_from_dict


def demo_recipe(**teacher):
    """The demo (digits, CNN teacher, 100-label MLP student) at a test budget: one seed, a few epochs;
    `teacher` replaces keys of the teacher block (None removes one)."""
    with resources.as_file(resources.files("kdforge") / "recipes" / "demo_digits.yaml") as path:
        recipe = load_recipe(path, overrides=["seeds=[0]", "teacher.train.epochs=3", "teacher.train.progress=false",
                                              "train.epochs=6", "train.progress=false", "baseline=false"])
    data = recipe.model_dump(mode="json")
    data["teacher"].update(teacher)
    data["teacher"] = {k: v for k, v in data["teacher"].items() if v is not None}
    return recipe_from_dict(data)


def test_cached_training_gives_the_online_student_on_the_demo_data(tmp_path, monkeypatch):
    recipe = demo_recipe()
    data = load_data(recipe.data)
    teacher = run_teacher(recipe, data, tmp_path, resume=False)  # trains the CNN teacher (3 epochs)
    teacher_val = predict_logits(teacher, data.val, ["x"])
    test = data.test.tensors["labels"]

    def accuracy(student):
        return accuracy_summary(test, predict_logits(student, data.test, ["x"]), 0.95)["accuracy"]

    online = distill_student(recipe, 0, data, teacher, teacher_val, tmp_path / "online", False)
    calls = {"n": 0}
    original = CachedTeacher.__call__

    def counting(self, batch):
        calls["n"] += 1
        return original(self, batch)

    monkeypatch.setattr(CachedTeacher, "__call__", counting)
    with_cache = demo_recipe(path=str(tmp_path / "teacher"), model=None, args={}, train=None,
                             cache=str(tmp_path / "cache"))
    cached_teacher = run_teacher(with_cache, data, tmp_path / "unused", resume=False)  # builds the store
    assert (tmp_path / "cache" / "manifest.json").is_file()
    cached = distill_student(with_cache, 0, data, cached_teacher, teacher_val, tmp_path / "cached", False)
    assert calls["n"] > 6 * 20  # every training step read the store
    a, b = accuracy(online), accuracy(cached)
    assert abs(a - b) <= 2 / len(test), (a, b)  # same seed: at most float rounding apart (teacher batches differ)

    # the store is reused, not rebuilt, by the next run with the same teacher and data
    stamp = (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns
    run_teacher(with_cache, data, tmp_path / "unused", resume=False)
    assert (tmp_path / "cache" / "manifest.json").stat().st_mtime_ns == stamp

    # a cache-only recipe: students train from the store, the report replays the teacher's test outputs
    only = run_recipe(demo_recipe(cache=str(tmp_path / "cache"), model=None, args={}, train=None),
                      out_dir=tmp_path / "only")
    assert only.report["student"]["accuracy"] == b
    assert only.report["teacher"]["accuracy"] == accuracy(teacher)
    assert only.report["teacher"]["params"] == sum(p.numel() for p in teacher.parameters())


def iris_recipe(tmp_path, checkpoint, **cache):
    torch.manual_seed(0)
    save_file(MLP((4,), 3, hidden=(16,)).state_dict(), str(tmp_path / checkpoint))
    data = {
        "name": "iris-cache", "seeds": [0], "data": {"source": "sklearn:iris", "test_size": 0.3, "val_size": 0.2},
        "teacher": {"model": "builtin:mlp", "args": {"hidden": [16]}, "checkpoint": checkpoint,
                    "cache": {"dir": "cache", **cache}},
        "student": {"model": "builtin:mlp", "args": {"hidden": [4]}},
        "losses": [{"name": "kd", "weight": 0.9, "temperature": 2.0}, {"name": "ce", "weight": 0.1}],
        "train": {"epochs": 2, "batch_size": 16, "progress": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cli(args, capsys):
    """Run the CLI; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cache_command_builds_reuses_and_refuses_a_foreign_teacher(tmp_path, capsys):
    recipe = iris_recipe(tmp_path, "teacher.safetensors")
    code, out, _ = cli(["cache", str(recipe), "--quiet"], capsys)
    assert code == 0 and "teacher cache built" in out
    code, out, _ = cli(["cache", str(recipe), "--quiet"], capsys)
    assert code == 0 and "teacher cache up to date" in out
    torch.manual_seed(1)
    save_file(MLP((4,), 3, hidden=(16,)).state_dict(), str(tmp_path / "teacher.safetensors"))
    code, _, err = cli(["cache", str(recipe), "--quiet"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "another teacher" in err and "--overwrite" in err
    code, out, _ = cli(["cache", str(recipe), "--quiet", "--overwrite"], capsys)
    assert code == 0 and "teacher cache built" in out


def test_stated_settings_must_match_the_store(tmp_path, capsys):
    recipe = iris_recipe(tmp_path, "teacher.safetensors")
    assert cli(["cache", str(recipe), "--quiet"], capsys)[0] == 0
    code, _, err = cli(["distill", str(recipe), "--out", str(tmp_path / "run"), "--quiet",
                        "--set", "teacher.cache.logits=topk"], capsys)
    assert code == 2 and "recipe.teacher.cache.logits" in err


def test_cache_recipe_errors_name_the_field():
    with pytest.raises(RecipeError, match="recipe.teacher.*'checkpoint' and 'train' need 'model'"):
        recipe_from_dict({"teacher": {"cache": "x", "train": {}}, "student": {"model": "builtin:mlp"},
                          "data": {"source": "sklearn:iris"}, "losses": [{"name": "kd"}]})
    from kdforge.app.teacher import cache_recipe

    trained = recipe_from_dict({"teacher": {"model": "builtin:mlp", "train": {}, "cache": "x"},
                                "student": {"model": "builtin:mlp"}, "data": {"source": "sklearn:iris"},
                                "losses": [{"name": "kd"}]})
    with pytest.raises(RecipeError, match="recipe.teacher.train: `kdforge cache` runs a teacher that already"):
        cache_recipe(trained)
