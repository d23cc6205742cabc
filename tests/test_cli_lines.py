"""What the CLI's closing lines name (issue 16, item 8): the report page, and the seed `eval RUN` evaluated."""

from tests.test_cli import run_cli, write_recipe


def test_distill_ends_with_report_html_and_eval_names_its_seed(tmp_path, capsys, tiny_recipe_dict):
    tiny_recipe_dict["seeds"] = [0, 1]
    path = write_recipe(tmp_path, tiny_recipe_dict)
    code, out, _ = run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code in (0, None)
    assert out.strip().splitlines()[-1].startswith(f"Report: {tmp_path / 'run' / 'report.html'}"), out
    code, out, _ = run_cli(["eval", str(tmp_path / "run"), "--seed", "1", "--no-cost", "-q"], capsys)
    assert code in (0, None) and "seed 1 student" in out, out
    code, out, _ = run_cli(["report", str(tmp_path / "run"), "-q"], capsys)
    assert code in (0, None) and "report.html" in out and "--out" not in out, out
