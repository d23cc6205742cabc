"""Label-free runs (sentence-embedding distillation) through run_recipe: the shipped tiny recipe end to end, the
report's embedding section without accuracy, best-step selection by val/cosine, and what is refused."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from kdforge.app.run import run_recipe  # noqa: E402
from kdforge.errors import KDForgeError, RecipeError  # noqa: E402
from kdforge.evaluate import predict_logits, validator  # noqa: E402
from kdforge.recipe import load_recipe  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embed_mse" / "stdlib_tinybert_smoke.yaml"
# what a classification report prints (its columns, the KD-gain line, the PAC check)
CLASSIFICATION_WORDS = ("test accuracy", "agreement with teacher", "95% lower bound", "Distillation helps",
                        "does not help", "scratch student", "PAC check")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_recipe(load_recipe(RECIPE), tmp_path_factory.mktemp("embed") / "run")


def test_test_metrics_are_embedding_fidelity(run):
    metrics = json.loads((run.out_dir / "seed-0" / "student" / "test_metrics.json").read_text())
    for key in ("cosine", "cosine_min", "cosine_p05", "mse", "spearman", "params", "steps", "best_step"):
        assert key in metrics, key
    assert not any(k.startswith(("accuracy", "agreement")) for k in metrics)
    assert metrics["cosine_min"] <= metrics["cosine_p05"] <= metrics["cosine"] <= 1.0
    assert metrics["n"] == 60 and metrics["pairs"] == 60 * 59 // 2 and metrics["dim"] == 16
    assert not (run.out_dir / "seed-0" / "scratch").exists()


def test_report_has_the_embedding_section_and_no_accuracy(run):
    report = json.loads((run.out_dir / "report.json").read_text())
    assert report["task"] == "embedding"
    assert report["embedding"]["cosine"] == pytest.approx(report["student"]["cosine"])  # one seed
    assert 0 < report["params_ratio"] < 1 and report["throughput_ratio"] > 0
    assert report["cost"]["student"]["params"] < report["cost"]["teacher"]["params"]
    assert not {"kd_gain", "scratch", "agreement", "accuracy", "fidelity"} & set(report)
    assert "accuracy" not in report["teacher"] and "accuracy" not in report["student"]
    md, html = (run.out_dir / "report.md").read_text(), (run.out_dir / "report.html").read_text()
    for text in (md, html):
        assert "Embedding fidelity" in text and "Spearman" in text
        assert not [w for w in CLASSIFICATION_WORDS if w in text], [w for w in CLASSIFICATION_WORDS if w in text]
    assert {"plots/curves.png", "plots/cosines.png", "plots/cost.png"} <= set(report["plots"])


def test_best_step_is_the_best_val_cosine_and_its_weights_are_kept(run):
    folder = run.out_dir / "seed-0" / "student"
    evals = [r for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines()) if "val/cosine" in r]
    assert [r["step"] for r in evals] == [10, 20, 30, 40]
    best = max(evals, key=lambda r: r["val/cosine"])  # max keeps the first of equal values, as the loop does
    metrics = run.students[0].metrics
    assert metrics["best_step"] == best["step"] and "cosine_last" in metrics
    recipe = load_recipe(RECIPE)
    from kdforge.data import load_data

    data = load_data(recipe.data, recipe._base_dir)
    teacher_val = predict_logits(run.teacher, data.val, recipe.teacher.inputs)
    kept = validator(data.val, recipe.student.inputs, teacher_val)(run.students[0].model)
    assert kept["val/cosine"] == pytest.approx(best["val/cosine"], abs=1e-6)


def test_report_regenerates_and_eval_says_why_it_does_not_apply(run):
    from kdforge.report.run import evaluate_run, regenerate_report

    before = json.loads((run.out_dir / "report.json").read_text())
    again = regenerate_report(run.out_dir)
    assert again["task"] == "embedding" and again["student"]["cosine"] == pytest.approx(before["student"]["cosine"])
    with pytest.raises(KDForgeError, match="no labels .* report.json's `embedding`"):
        evaluate_run(run.out_dir)


def _changed(**changes):
    recipe = load_recipe(RECIPE)
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            setattr(getattr(recipe, section), key, value)
        else:
            setattr(recipe, section, value)
    return recipe


@pytest.mark.parametrize("changes, message", [
    ({"baseline": True}, "recipe.baseline: this data has no labels .* Set `baseline: false`"),
    ({"train__monitor": "val/accuracy"}, "recipe.train.monitor: 'val/accuracy' is not measured .* val/cosine"),
])
def test_what_needs_labels_is_refused_before_training(changes, message, tmp_path):
    recipe = _changed(**changes)
    with pytest.raises(RecipeError, match=message):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run" / "seed-0").exists()


def test_ce_and_a_teacher_trained_on_labels_are_refused(tmp_path):
    from kdforge.recipe import LossTerm, TrainConfig

    recipe = load_recipe(RECIPE)
    recipe.losses = [*recipe.losses, LossTerm(name="ce")]
    with pytest.raises(RecipeError, match=r"recipe.losses\[1\]: `ce` needs labels"):
        run_recipe(recipe, tmp_path / "a")
    recipe = load_recipe(RECIPE)
    recipe.teacher.train = TrainConfig(max_steps=1)
    with pytest.raises(RecipeError, match="recipe.teacher.train: .* cannot be trained"):
        run_recipe(recipe, tmp_path / "b")


def test_validator_without_labels_or_teacher_is_an_error():
    from kdforge.data.tensors import TensorData

    data = TensorData({"input_ids": torch.ones(4, 3, dtype=torch.long)}, name="val")
    with pytest.raises(KDForgeError, match="no 'labels' and there are no teacher outputs"):
        validator(data, ["input_ids"], None)
