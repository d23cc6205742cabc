"""report.json keeps its stable keys and gains every documented section; report.md and report.html say them."""

import json
import re
from pathlib import Path

import pytest

from kdforge.data import load_data
from kdforge.evaluate import predict_logits
from kdforge.metrics import (
    expected_calibration_error,
    js_divergence,
    kl_to_teacher,
    prediction_confusion,
    top1_agreement,
)
from kdforge.recipe import DataSpec
from kdforge.report import DETAIL_SECTIONS, write_report

STABLE_KEYS = ["teacher", "student", "scratch", "agreement", "agreement_lower_95", "kd_gain", "data", "seeds",
               "confidence", "losses", "environment", "plots", "report_version"]
DATA = {"source": "sklearn:iris", "test_size": 0.3, "val_size": 0.2}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "report.md"


def test_stable_and_new_keys(tiny_run):
    out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    for key in STABLE_KEYS + list(DETAIL_SECTIONS) + ["evaluated_seed", "eval_options"]:
        assert key in report, key
    for key in ("accuracy", "params", "per_seed"):
        assert key in report["student"] and key in report["scratch"]
    assert "accuracy" in report["teacher"] and "params" in report["teacher"]
    assert report["agreement"] == report["student"]["agreement"]
    for name in ("report.md", "report.html", "plots/agreement.png", "plots/reliability.png", "plots/confusion.png",
                 "plots/cost.png", "plots/accuracy.png", "plots/curves.png"):
        assert (out / name).is_file(), name
    assert set(report["plots"]) >= {"plots/agreement.png", "plots/reliability.png", "plots/cost.png"}


def test_numbers_match_an_independent_recomputation(tiny_run):
    out, result = tiny_run
    report = json.loads((out / "report.json").read_text())
    data = load_data(DataSpec(**DATA))
    teacher_logits = predict_logits(result.teacher, data.test, ["x"])
    student_logits = predict_logits(result.students[0].model, data.test, ["x"])
    labels = data.test.tensors["labels"]
    f = report["fidelity"]
    agree, n = top1_agreement(teacher_logits, student_logits)
    assert (f["n"], f["agreement"]) == (n, agree / n)
    assert f["kl"] == pytest.approx(kl_to_teacher(teacher_logits, student_logits), rel=1e-6)
    assert f["js"] == pytest.approx(js_divergence(teacher_logits, student_logits), rel=1e-6)
    assert report["confusion"]["matrix"] == prediction_confusion(teacher_logits, student_logits)
    assert report["calibration"]["student"]["ece"] == pytest.approx(
        expected_calibration_error(labels, student_logits, 15), rel=1e-6)
    assert report["student"]["per_seed"][0]["kl"] == pytest.approx(f["kl"], rel=1e-9)
    assert sum(r["n"] for r in report["per_class"]) == len(labels)
    assert sum(map(sum, report["confusion"]["matrix"])) == len(labels)
    pac = f["pac"]
    assert pac["disagreements"] == n - agree and pac["n_needed_hoeffding"] == 14979
    cost = report["cost"]
    assert cost["teacher"]["params"] == report["teacher"]["params"]
    assert cost["student"]["params"] == report["student"]["params"]
    assert cost["speedup"].keys() == {"1", "32", "256"}
    assert report["explanations"]["available"] is False  # tabular inputs: no maps
    assert 0.0 <= report["robustness"]["agreement_perturbed"]["rate"] <= 1.0


def test_markdown_and_html_show_every_section(tiny_run):
    out, _ = tiny_run
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for title in ("Fidelity", "Distribution match", "Accuracy and per class", "Teacher vs student confusion",
                  "Calibration", "Explanations", "Robustness", "Cost", "Per seed"):
        assert f"## {title}" in md, title
        assert f"<h2>{title}</h2>" in html, title
    assert "PAC check" in md and "With 95% confidence" in md
    # self-contained: every image is inline data, nothing is fetched
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in html and "https://" not in html


def test_every_report_key_is_documented(tiny_run):
    out, _ = tiny_run
    report = json.loads((out / "report.json").read_text())
    docs = DOCS.read_text()
    missing = [key for key in _keys(report) if f"`{key}`" not in docs]
    assert not missing, f"report keys not documented in docs/report.md: {missing}"


def _keys(node, prefix=""):
    """Dotted key paths; list items are `[]`, maps keyed by data (k, batch size) are `*`. `environment` and
    `per_seed` entries are documented by reference (environment.json, test_metrics.json), not key by key."""
    if isinstance(node, dict):
        for key, value in node.items():
            if prefix.endswith(("top_k_overlap", "speedup")):
                yield f"{prefix}.*"
                return
            path = f"{prefix}.{key}" if prefix else key
            yield path
            if key not in ("environment", "per_seed"):
                yield from _keys(value, path)
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        yield from _keys(node[0], f"{prefix}[]")


def test_write_report_without_teacher_model_keeps_old_report(tiny_run, tiny_recipe, tmp_path):
    out, result = tiny_run
    data = load_data(DataSpec(**DATA))
    report = write_report(tmp_path, tiny_recipe, data, {"accuracy": 1.0, "params": 10}, result.students,
                          result.scratch, json.loads((out / "environment.json").read_text()))
    assert "fidelity" not in report and (tmp_path / "report.html").is_file()
    assert report["agreement"] == result.students[0].metrics["agreement"]
    assert "## Distribution match" not in (tmp_path / "report.md").read_text()


def test_a_failing_evaluation_keeps_the_basic_report(tiny_run, tiny_recipe, tmp_path):
    import torch

    out, result = tiny_run
    data = load_data(DataSpec(**DATA))
    wrong = torch.nn.Linear(4, 5)  # five classes: the detailed evaluation cannot compare it with the students
    report = write_report(tmp_path, tiny_recipe, data, {"accuracy": 1.0, "params": 25}, result.students,
                          result.scratch, {"kdforge": "x", "torch": "x", "python": "x", "torch_threads": 1,
                                           "cuda": False}, teacher_model=wrong)
    assert "ShapeMismatchError" in report["evaluation_error"] and "fidelity" not in report
    assert json.loads((tmp_path / "report.json").read_text())["agreement"] == report["agreement"]
