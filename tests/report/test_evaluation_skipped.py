"""A detailed evaluation skipped by design (teacher and student with different tokenizers) is reported as not
run, under its own key, never as a failure; a failed one still says it failed."""

import pytest

from kdforge.cli import _print_summary
from kdforge.report.embedding_content import evaluation_note

REASON = "teacher and student use different tokenizers"


def test_the_note_tells_skipped_from_failed():
    assert evaluation_note({"evaluation_skipped": REASON}) == f"The detailed evaluation was not run: {REASON}."
    assert evaluation_note({"evaluation_error": "ShapeMismatchError: x"}) == ("The detailed evaluation failed: "
                                                                              "ShapeMismatchError: x.")
    assert evaluation_note({}) is None


def classification_report(**extra):
    model = {"params": 10, "accuracy": 0.5, "accuracy_std": 0.0, "agreement": 0.5, "agreement_lower_95": 0.4}
    return {"name": "run", "seeds": [0], "data": {"test": 4}, "teacher": model, "student": model, **extra}


def embedding_report(**extra):
    student = {"params": 5, "cosine": 0.9, "cosine_std": 0.0, "spearman": 0.8, "spearman_std": 0.0, "mse": 0.1}
    return {"task": "embedding", "name": "run", "seeds": [0], "data": {"test": 4}, "teacher": {"params": 10},
            "student": student, "params_ratio": 0.5, **extra}


@pytest.mark.parametrize("make", [classification_report, embedding_report], ids=["classification", "embedding"])
def test_the_cli_summary_says_not_run_or_failed(make, tmp_path, capsys):
    _print_summary(make(evaluation_skipped=REASON), tmp_path)
    said = capsys.readouterr().out
    assert f"The detailed evaluation was not run: {REASON}." in said and "failed" not in said
    _print_summary(make(evaluation_error="ShapeMismatchError: x"), tmp_path)
    assert "The detailed evaluation failed: ShapeMismatchError: x." in capsys.readouterr().out
    _print_summary(make(), tmp_path)
    assert "detailed evaluation" not in capsys.readouterr().out
