"""The report's "does distillation help?" sentence and `kdforge compare` come from a paired test on the same
test rows (exact McNemar), never from the gap between two means (issue 16, item 6)."""

import json
import shutil

import pytest
import yaml
from scipy.stats import binomtest

from kdforge.cli import main
from kdforge.data import load_data
from kdforge.evaluate import predict_logits
from kdforge.recipe import DataSpec
from kdforge.report.compare import kd_verdict
from kdforge.report.comparison import compare_runs

DATA = {"source": "sklearn:iris", "test_size": 0.3, "val_size": 0.2}


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_the_verdict_is_a_paired_test_on_the_test_rows(tiny_run):
    out, result = tiny_run
    report = json.loads((out / "report.json").read_text())
    test = report["kd_gain_test"]
    labels = load_data(DataSpec(**DATA)).test.tensors["labels"]
    data = load_data(DataSpec(**DATA)).test
    right_s = predict_logits(result.students[0].model, data, ["x"]).argmax(1) == labels
    right_b = predict_logits(result.scratch[0].model, data, ["x"]).argmax(1) == labels
    a_only, b_only = int((right_s & ~right_b).sum()), int((~right_s & right_b).sum())
    assert (test["a_only"], test["b_only"], test["rows"]) == (a_only, b_only, len(labels))
    expected_p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    assert test["p_value"] == pytest.approx(expected_p) and test["alpha"] == pytest.approx(0.05)
    assert test["gap"] == pytest.approx(report["kd_gain"])
    sentence = kd_verdict(test)
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert sentence in md and "exact McNemar" in sentence
    if test["p_value"] >= 0.05:
        assert sentence.startswith("No detectable difference at this test size")
        assert f"About {test['rows_needed']:,} test rows per seed" in sentence
        assert "Distillation helps" not in md and "Distillation does not help" not in md
    assert "No detectable difference" in html or "Distillation h" in html


def test_a_one_row_gain_is_not_called_help():
    """The wine case: +2.78 points from one row of 36."""
    test = {"method": "x", "alpha": 0.05, "seeds": 1, "rows": 36, "a_only": 1, "b_only": 0, "gap": 1 / 36,
            "p_value": 1.0, "significant": False, "better": None, "rows_needed": 283, "power": 0.8,
            "power_method": "Connor (1987)"}
    sentence = kd_verdict(test)
    assert sentence.startswith("No detectable difference at this test size: +2.78 accuracy points")
    assert "About 283 test rows per seed" in sentence and "helps" not in sentence
    assert kd_verdict({**test, "a_only": 30, "p_value": 1e-9, "significant": True, "better": "a"}).startswith(
        "Distillation helps here: +2.78 accuracy points")


def test_compare_two_runs_on_the_same_rows(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    shutil.rmtree(twin / "seed-0" / "student")
    shutil.copytree(out / "seed-0" / "scratch", twin / "seed-0" / "student")  # B's "student": A's scratch twin
    result = compare_runs(out, twin)
    kd = report["kd_gain_test"]
    assert (result["a_only"], result["b_only"], result["p_value"]) == (kd["a_only"], kd["b_only"], kd["p_value"])
    code, stdout, _ = run_cli(["compare", str(out), str(twin), "--json", str(tmp_path / "c.json"), "-q"], capsys)
    assert code in (0, None) and "exact McNemar" in stdout
    assert json.loads((tmp_path / "c.json").read_text())["b_only"] == kd["b_only"]
    same = compare_runs(out, out)
    assert (same["a_only"], same["b_only"], same["p_value"], same["significant"]) == (0, 0, 1.0, False)


def test_compare_refuses_runs_tested_on_other_rows(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    other = tmp_path / "other"
    shutil.copytree(out, other)
    marker = other / "recipe.resolved.yaml"
    recipe = yaml.safe_load(marker.read_text())
    recipe["data"]["split_seed"] = 7  # another split of the same source: other test rows
    marker.write_text(yaml.safe_dump(recipe))
    code, _, err = run_cli(["compare", str(out), str(other)], capsys)
    assert code == 2 and "different rows" in err and len(err.strip().splitlines()) == 1
