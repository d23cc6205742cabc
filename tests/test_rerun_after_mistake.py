"""A mistake on the student's side stops a run before the teacher trains, and a fixed recipe reuses the
finished teacher (issue: a bad tap found after the teacher trained left a folder that blocked the re-run)."""

import hashlib

import pytest

import kdforge
from kdforge.app.run import run_recipe
from kdforge.recipe import recipe_from_dict


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bad_tap(recipe: dict) -> dict:
    recipe["taps"] = {"student": {"s": "blocks.7"}, "teacher": {"t": "blocks.0"}}
    recipe["losses"] = [{"name": "ce"}, {"name": "fitnet", "pairs": [["s", "t"]]}]
    return recipe


def test_a_bad_student_tap_stops_the_run_before_the_teacher_trains(tmp_path, tiny_recipe_dict):
    with pytest.raises(kdforge.KDForgeError, match=r"recipe\.taps\.student\.s: .*'blocks\.7'"):
        run_recipe(recipe_from_dict(_bad_tap(tiny_recipe_dict)), out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "teacher" / "model.json").exists()
    assert not (tmp_path / "run" / "teacher" / "log.jsonl").exists()


def test_a_missing_py_student_stops_the_run_before_the_teacher_trains(tmp_path, tiny_recipe_dict):
    tiny_recipe_dict["student"] = {"model": "py:no_such_module_here:make"}
    with pytest.raises(kdforge.KDForgeError, match="no_such_module_here"):
        run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "teacher" / "model.json").exists()


def test_the_early_check_changes_nothing_the_run_trains(tmp_path, tiny_recipe_dict, monkeypatch):
    checked = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "a")
    monkeypatch.setattr("kdforge.app.run.check_before_teacher", lambda *args, **kwargs: None)
    unchecked = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "b")
    for part in ("teacher", "seed-0/student", "seed-0/scratch"):
        assert _digest(tmp_path / "a" / part / "model.safetensors") == \
            _digest(tmp_path / "b" / part / "model.safetensors"), part
    assert checked.report["student"]["accuracy"] == unchecked.report["student"]["accuracy"]


def test_a_rerun_with_a_changed_student_side_reuses_the_finished_teacher(tmp_path, tiny_recipe_dict):
    first = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    teacher = _digest(tmp_path / "run" / "teacher" / "model.safetensors")
    student = _digest(tmp_path / "run" / "seed-0" / "student" / "model.safetensors")
    tiny_recipe_dict["train"]["lr"] = 0.05
    with pytest.raises(kdforge.KDForgeError, match="its teacher is reused"):
        run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    second = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run", resume=True)
    assert _digest(tmp_path / "run" / "teacher" / "model.safetensors") == teacher
    assert _digest(tmp_path / "run" / "seed-0" / "student" / "model.safetensors") != student  # trained again
    assert second.report["teacher"]["accuracy"] == first.report["teacher"]["accuracy"]
    assert "lr: 0.05" in (tmp_path / "run" / "recipe.resolved.yaml").read_text()
    fresh = run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "fresh")
    assert second.report["student"]["accuracy"] == fresh.report["student"]["accuracy"]
    assert _digest(tmp_path / "fresh" / "seed-0" / "student" / "model.safetensors") == \
        _digest(tmp_path / "run" / "seed-0" / "student" / "model.safetensors")


def test_a_changed_teacher_is_not_reused(tmp_path, tiny_recipe_dict):
    run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run")
    tiny_recipe_dict["teacher"]["train"]["lr"] = 0.05
    with pytest.raises(kdforge.KDForgeError, match="different recipe .*teacher or data"):
        run_recipe(recipe_from_dict(tiny_recipe_dict), out_dir=tmp_path / "run", resume=True)
