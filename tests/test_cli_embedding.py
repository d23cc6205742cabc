"""The command line on a label-free run (the tiny sentence-embedding recipe): `distill` and `report` print the
cosine / Spearman / size / speed summary instead of accuracy and a PAC verdict; `eval` and `export --scratch`
end with one line and exit 2; `export` of the student works."""

import contextlib
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from kdforge.cli import main  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "embed_mse" / "stdlib_tinybert_smoke.yaml"
CLASSIFICATION_WORDS = ("accuracy", "agreement", "KD gain", "PAC", "95% lower bound")


def cli(args: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `kdforge ARGS`; usable in a module-scoped fixture, unlike capsys."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("embed-cli") / "run"
    code, out, err = cli(["distill", str(RECIPE), "--out", str(run_dir), "--quiet"])
    return run_dir, code, out, err


def _assert_embedding_summary(out: str, report: dict) -> None:
    flat = " ".join(out.split())  # rich wraps long lines and headers at the console width
    student = report["student"]
    assert "no labels" in flat and "Spearman" in flat and "cosine" in flat
    assert f"{student['cosine']:.4f} ± {student['cosine_std']:.4f}" in flat
    assert f"{student['spearman']:.4f} ± {student['spearman_std']:.4f}" in flat
    assert f"{report['params_ratio']:.3f}x the teacher's parameters" in flat
    assert f"{report['throughput_ratio']:.2f}x the teacher's throughput" in flat
    assert f"{report['teacher']['params']:,}" in flat and f"{student['params']:,}" in flat
    assert not [w for w in CLASSIFICATION_WORDS if w in flat], out


def test_distill_prints_the_embedding_summary(distilled):
    run_dir, code, out, err = distilled
    assert code == 0, err
    report = json.loads((run_dir / "report.json").read_text())
    assert report["task"] == "embedding"
    _assert_embedding_summary(out, report)
    assert "report.md" in out


def test_report_reprints_it_without_a_pac_verdict(distilled):
    run_dir = distilled[0]
    code, out, err = cli(["report", str(run_dir), "--quiet"])
    assert code == 0, err
    _assert_embedding_summary(out, json.loads((run_dir / "report.json").read_text()))  # the regenerated one
    assert "report.html" in out


def test_eval_refuses_with_one_line(distilled):
    code, out, err = cli(["eval", str(distilled[0]), "--quiet"])
    assert code == 2 and out == ""
    assert err.startswith("error: eval: ") and "no labels" in err and "report.json's `embedding`" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3  # one line, wrapped by the console


def test_export_writes_the_student_and_refuses_a_missing_scratch(distilled, tmp_path):
    run_dir = distilled[0]
    code, out, err = cli(["export", str(run_dir), "--out", str(tmp_path / "st")])
    assert code == 0, err
    assert (tmp_path / "st" / "model.safetensors").is_file() and "max |diff| 0" in " ".join(out.split())
    code, out, err = cli(["export", str(run_dir), "--scratch", "--out", str(tmp_path / "scratch")])
    assert code == 2 and "no scratch baseline" in err and "Drop --scratch" in " ".join(err.split())
    assert not (tmp_path / "scratch").exists()
