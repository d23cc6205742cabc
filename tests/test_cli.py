"""The command line: useful help, one-line errors with exit code 2, a run that writes its report."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdforge.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def write_recipe(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(path)


def test_help_lists_commands(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and all(cmd in out for cmd in ("distill", "demo", "list", "inspect"))


def test_distill_help_is_useful(capsys):
    code, out, _ = run_cli(["distill", "--help"], capsys)
    assert code == 0 and "--resume" in out and "--set" in out and "--seeds" in out


def test_list_losses(capsys):
    code, out, _ = run_cli(["list", "losses"], capsys)
    assert code in (0, None) and "kd" in out and "Hinton" in out


def _bad_recipes(tiny):
    unknown_key = {**tiny, "trian": {}}
    unknown_loss = {**tiny, "losses": [{"name": "kl_div"}]}
    bad_py = {**tiny, "student": {"model": "py:no_such_pkg.models:make"}}
    bad_attr = {**tiny, "student": {"model": "py:json:no_such_factory"}}
    bad_value = {**tiny, "train": {**tiny["train"], "lr": -1}}
    bad_layer = {**tiny, "taps": {"student": {"h": "blocks.7"}}}
    no_weights = {**tiny, "teacher": {"model": "builtin:mlp"}}
    bad_prefix = {**tiny, "student": {"model": "resnet18"}}
    return [
        ("malformed", "name: [unclosed\n", "malformed YAML"),
        ("unknown_key", unknown_key, "recipe.trian: unknown key 'trian'. Did you mean 'train'?"),
        ("unknown_loss", unknown_loss, "recipe.losses[0].name: unknown loss 'kl_div'"),
        ("py_import", bad_py, "recipe.student.model: cannot import module 'no_such_pkg.models'"),
        ("py_attr", bad_attr, "recipe.student.model: 'json' has no attribute 'no_such_factory'"),
        ("bad_value", bad_value, "recipe.train.lr: Input should be greater than 0"),
        ("bad_layer", bad_layer, "recipe.taps.student.h: unknown submodule of MLP 'blocks.7'"),
        ("no_weights", no_weights, "recipe.teacher: the teacher has no weights"),
        ("bad_prefix", bad_prefix, "recipe.student.model: 'resnet18' has no known prefix"),
    ]


@pytest.mark.parametrize("case", range(9))
def test_user_errors_exit_2_with_one_line(case, tmp_path, capsys, tiny_recipe_dict):
    name, data, message = _bad_recipes(tiny_recipe_dict)[case]
    path = write_recipe(tmp_path, data)
    code, _, err = run_cli(["distill", path, "--out", str(tmp_path / "run"), "-q"], capsys)
    assert code == 2, (name, err)
    assert err.startswith("error: ") and message in err, (name, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_recipe_file(capsys):
    code, _, err = run_cli(["distill", "no/such/recipe.yaml"], capsys)
    assert code == 2 and "does not exist" in err


def test_distill_writes_report_and_refuses_to_overwrite(tmp_path, capsys, tiny_recipe_dict):
    path = write_recipe(tmp_path, tiny_recipe_dict)
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["distill", path, "--out", str(out), "-q", "--seeds", "0,1"], capsys)
    assert code in (0, None)
    assert "distilled student" in stdout and (out / "report.json").is_file()
    assert (out / "seed-1" / "student" / "model.safetensors").is_file()
    code, _, err = run_cli(["distill", path, "--out", str(out), "-q"], capsys)
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    code, _, _ = run_cli(["distill", path, "--out", str(out), "-q", "--overwrite"], capsys)
    assert code in (0, None)


def test_console_script_exit_code(tmp_path):
    kdforge = Path(sys.executable).with_name("kdforge")
    proc = subprocess.run([str(kdforge), "distill", str(tmp_path / "missing.yaml")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: recipe: file") and "Traceback" not in proc.stderr
