"""What the report and the CLI say about how training went (issue 16): divergence in plain words with the
setting to look at (item 5), steps a small validation set cannot tell apart and best vs last side by side
(item 7), and robustness wording that matches the data and the sign (item 8)."""

import json

import pytest
import torch
import yaml
from tests.tiny import tiny_recipe

from kdforge.cli import main
from kdforge.data.tensors import TensorData
from kdforge.evaluate import validator
from kdforge.report.content import agreement_change
from kdforge.report.training import selection_check


def test_a_diverging_lr_is_said_in_the_cli_and_the_report(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(name="diverging")))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["distill", str(recipe), "--out", str(out), "--set", "train.lr=1e6", "-q"])
    stdout = capsys.readouterr().out
    assert info.value.code in (0, None)
    assert "training diverged" in stdout and "Lower train.lr (now 1e+06)" in stdout
    report = json.loads((out / "report.json").read_text())
    diverged = {(e["model"], e["seed"]) for e in report["divergence"]}
    assert ("student", 0) in diverged and all(e["loss_ratio"] >= 100 for e in report["divergence"])
    for name in ("report.md", "report.html"):
        assert "Training diverged." in (out / name).read_text() and "train.lr" in (out / name).read_text()


def test_a_healthy_run_has_no_divergence_and_shows_best_vs_last(tiny_run):
    out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    assert report["divergence"] == []
    assert {(e["model"], e["seed"]) for e in report["selection"]} == {("student", 0), ("scratch", 0)}
    md = (out / "report.md").read_text()
    assert "| seed | run | kept step | test accuracy (kept) | test accuracy (last) |" in md
    assert md.count("| 0 | distilled |") == 2 and "| 0 | scratch |" in md  # per-seed table + best-vs-last table


def test_a_tie_heavy_validation_set_is_flagged():
    evals = [{"step": s, "val/accuracy": a} for s, a in
             [(8, 17 / 18), (20, 17 / 18), (40, 16 / 18), (80, 17 / 18), (120, 1.0), (160, 17 / 18)]]
    check = selection_check(evals, "val/accuracy", 18)
    assert check["too_small"] and check["near_best"] == 5 and check["near_best_steps"] == [8, 20, 80, 120, 160]
    wide = [{"step": s, "val/accuracy": a} for s, a in [(1, 0.5), (2, 0.7), (3, 0.9)]]
    assert not selection_check(wide, "val/accuracy", 1000)["too_small"]
    assert not selection_check(evals, "val/accuracy", 180)["too_small"]  # ties, but a row is worth 0.6 points
    assert selection_check(evals, "val/cosine", 18) is None  # not counted in rows


def test_validator_reports_the_validation_loss():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g)
    labels = torch.randint(0, 3, (30,), generator=g)
    model = torch.nn.Linear(4, 3)
    metrics = validator(TensorData({"x": x, "labels": labels}), ["x"], None)(model)
    expected = torch.nn.functional.cross_entropy(model(x).double(), labels).item()
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-6)


def test_robustness_text_matches_the_data_and_the_sign(tiny_run):
    out, _ = tiny_run
    md = (out / "report.md").read_text()
    assert "Gaussian noise" in md and "token dropout" not in md  # iris: tabular, nothing to drop
    assert agreement_change({"agreement_drop": -0.0556}) == \
        "Agreement with the teacher rises by 5.56 points under perturbation."
    assert "falls by 2.00 points" in agreement_change({"agreement_drop": 0.02})
    assert "unchanged" in agreement_change({"agreement_drop": 0.0})
