"""kdforge eval / report: what they print, write and exit with."""

import json
import shutil

import pytest
from scipy.stats import beta

from kdforge.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


FAST = ["--no-cost", "--quiet"]


def test_help_lists_the_report_commands(capsys):
    code, stdout, _ = run_cli(["--help"], capsys)
    assert code == 0 and all(cmd in stdout for cmd in ("eval", "report", "export"))
    code, stdout, _ = run_cli(["eval", "--help"], capsys)
    assert code == 0 and "--epsilon" in stdout and "--delta" in stdout and "--require-certified" in stdout


def test_eval_run_dir_answers_the_epsilon_delta_question(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    code, stdout, _ = run_cli(["eval", str(out), "--epsilon", "0.01", "--delta", "0.05", "--json",
                               str(tmp_path / "e.json"), *FAST], capsys)
    assert code in (0, None)
    assert "top-1 agreement" in stdout and "PAC (epsilon=0.01, delta=0.05)" in stdout
    result = json.loads((tmp_path / "e.json").read_text())
    n = result["fidelity"]["n"]
    assert n < 299 and "Too few samples" in result["fidelity"]["pac"]["verdict"]  # iris test split: 45 rows
    assert result["source"]["seed"] == 0 and "cost" not in result
    code, _, err = run_cli(["eval", str(out), "--require-certified", *FAST], capsys)
    assert code == 2 and f"needs at least {result['fidelity']['pac']['n_needed_exact_min']}" in err
    # a loose epsilon: the exit code follows the exact binomial bound, recomputed here with scipy
    k = n - round(result["fidelity"]["agreement"] * n)
    certified = beta.ppf(0.95, k + 1, n - k) <= 0.5
    code, _, _ = run_cli(["eval", str(out), "--epsilon", "0.5", "--delta", "0.05", "--require-certified", *FAST],
                         capsys)
    assert (code in (0, None)) == certified


def test_eval_explicit_folders(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    code, stdout, _ = run_cli(["eval", "--teacher", str(out / "teacher"), "--student",
                               str(out / "seed-0" / "student"), "--data", "sklearn:iris", "--split", "val",
                               "--json", str(tmp_path / "e.json"), *FAST], capsys)
    assert code in (0, None) and "probability loyalty" in stdout
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["source"]["split"] == "val" and result["fidelity"]["n"] == 15


@pytest.mark.parametrize("args,message", [
    (["eval"], "give a run folder"),
    (["eval", "--teacher", "t", "--student", "s"], "give a run folder"),
    (["eval", "nowhere"], "has no recipe.resolved.yaml"),
    (["eval", "RUN", "--epsilon", "2"], "--epsilon must be in (0, 1)"),
    (["report", "nowhere"], "has no recipe.resolved.yaml"),
])
def test_user_errors_exit_2(tiny_run, capsys, args, message):
    out, _ = tiny_run
    args = [str(out) if a == "RUN" else a for a in args]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_report_regenerates_every_file(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    for name in ("report.json", "report.md", "report.html"):
        (copy / name).unlink()
    shutil.rmtree(copy / "plots")
    code, stdout, _ = run_cli(["report", str(copy), "--epsilon", "0.2", "--quiet"], capsys)
    assert code in (0, None) and "PAC:" in stdout
    report = json.loads((copy / "report.json").read_text())
    before = json.loads((out / "report.json").read_text())
    assert report["fidelity"]["pac"]["epsilon"] == 0.2
    for key in ("agreement", "agreement_lower_95", "kd_gain"):
        assert report[key] == before[key]
    assert report["student"]["per_seed"][0]["kl"] == pytest.approx(before["student"]["per_seed"][0]["kl"])
    assert (copy / "report.html").is_file() and (copy / "plots" / "reliability.png").is_file()
