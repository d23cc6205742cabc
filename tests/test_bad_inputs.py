"""Bad input, table-driven: each case exits with code 2 and one line on stderr that names the field (or the
argument, file, split) and says what to do, never a traceback.

Each case builds its inputs in a fresh folder and returns the command line and the text the message must hold.
Python modules a case needs (`py:` references) are written beside the recipe, under a name unique to the case.
"""

import pytest
import torch
import yaml
from safetensors.torch import save_file

from kdforge.models.builtin import MLP
from tests.test_cli import run_cli, write_recipe

# words that show the message proposes a fix, not only what went wrong
FIX_WORDS = ("give", "use", "choose", "check", "pass", "remove", "add", "write", "make", "fix", "rebuild",
             "resume", "restart", "set", "lower", "did you mean", "valid keys", "expected", "should", "must",
             "need", "one of", "install", "at least", "keep", "delete", "start", "re-run", "drop")


def _distill(path, tmp_path, *extra):
    return ["distill", path, "--out", str(tmp_path / "run"), "-q", *extra]


def _module(tmp_path, name, source):
    (tmp_path / f"{name}.py").write_text(source)
    return name


def _recipe_case(change, message):
    """A case that edits the tiny recipe dict in place."""
    def case(tmp_path, tiny):
        change(tiny, tmp_path)
        return _distill(write_recipe(tmp_path, tiny), tmp_path), message
    return case


def _text_case(text, message):
    def case(tmp_path, tiny):
        return _distill(write_recipe(tmp_path, text), tmp_path), message
    return case


def _data_module_case(body, message):
    """The data comes from a `py:` source returning (X, y) built by `body`."""
    def case(tmp_path, tiny):
        name = _module(tmp_path, f"kdf_bad_data_{abs(hash(body)) % 10**8}",
                       f"import numpy as np\n\ndef load():\n    {body}\n")
        tiny["data"] = {"source": f"py:{name}:load", "test_size": 0.3, "val_size": 0.2}
        return _distill(write_recipe(tmp_path, tiny), tmp_path), message
    return case


def _set(path, value):
    def change(tiny, tmp_path):
        *parents, last = path.split(".")
        node = tiny
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return change


def _teacher_weights(hidden, garbage=False):
    """The teacher gets a `checkpoint` instead of `train`: weights of an MLP with `hidden`, or junk bytes."""
    def change(tiny, tmp_path):
        path = tmp_path / ("junk.safetensors" if garbage else "teacher.safetensors")
        if garbage:
            path.write_bytes(b"\x00not a safetensors file" * 10)
        else:
            save_file(MLP(input_shape=(4,), num_classes=3, hidden=hidden).state_dict(), str(path))
        tiny["teacher"] = {"model": "builtin:mlp", "args": {"hidden": [32]}, "checkpoint": path.name}
    return change


def _on_meta_device(tiny, tmp_path):
    name = _module(tmp_path, "kdf_bad_meta_student", (
        "import torch\n\ndef make(input_shape=None, num_classes=3):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, num_classes, device='meta'))\n"))
    tiny["student"] = {"model": f"py:{name}:make"}


def _pretrain_unrelated(tiny, tmp_path):
    """A pre-training model that shares no tensor name and shape with the student's MLP."""
    name = _module(tmp_path, "kdf_bad_pretrain_model", (
        "import torch\n\ndef make():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 7), torch.nn.ReLU(), torch.nn.Linear(7, 6))\n"))
    tiny["student"]["pretrain"] = {"model": f"py:{name}:make", "data": {"source": "sklearn:iris"},
                                   "train": {"max_steps": 1, "progress": False}}


def _existing_run(flag=None, change=None):
    """Runs the tiny recipe once (in-process), then tries again with `flag` and a changed recipe."""
    def case(tmp_path, tiny):
        path = write_recipe(tmp_path, tiny)
        code, _, err = run_cli(_distill(path, tmp_path), _NullCapsys())
        assert code in (0, None), err
        if change is not None:
            change(tiny, tmp_path)
            path = write_recipe(tmp_path, tiny, "changed.yaml")
        message = "holds a run of a different recipe" if flag == "--resume" else "already holds a run"
        return _distill(path, tmp_path, *([flag] if flag else [])), message
    return case


def _eval_set_too_small(tmp_path, tiny):
    """A finished run whose 45-row test split cannot certify 1% disagreement at 95% (299 rows are needed)."""
    code, _, err = run_cli(_distill(write_recipe(tmp_path, tiny), tmp_path), _NullCapsys())
    assert code in (0, None), err
    return (["eval", str(tmp_path / "run"), "--epsilon", "0.01", "--delta", "0.05", "--require-certified",
             "--no-cost"], "needs at least 299")


class _NullCapsys:
    """run_cli's capsys for a setup step whose output does not matter."""

    def readouterr(self):
        class Captured:
            out = err = ""
        return Captured()


def _out_is_a_file(tmp_path, tiny):
    (tmp_path / "run").write_text("not a folder")
    return _distill(write_recipe(tmp_path, tiny), tmp_path), "is a file, not a folder"


def _not_utf8(tmp_path, tiny):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    return _distill(str(path), tmp_path), "not UTF-8"


CASES = {
    # recipes: syntax, structure, types, names
    "malformed_yaml": _text_case("name: [unclosed\n", "malformed YAML at line"),
    "not_a_mapping": _text_case("- 1\n- 2\n", "the top level must be a mapping"),
    "python_tag": _text_case("name: !!python/object/apply:os.system ['echo pwned']\n", "malformed YAML"),
    "not_utf8": _not_utf8,
    "unknown_key": _recipe_case(_set("trian", {}), "recipe.trian: unknown key 'trian'. Did you mean 'train'?"),
    "unknown_nested_key": _recipe_case(_set("train.lr_rate", 0.1), "recipe.train.lr_rate: unknown key"),
    "wrong_type": _recipe_case(_set("train.batch_size", "sixteen"), "recipe.train.batch_size: Input should be"),
    "negative_lr": _recipe_case(_set("train.lr", -1), "recipe.train.lr: Input should be greater than 0"),
    "bad_nonfinite": _recipe_case(_set("train.nonfinite", "ignore"), "recipe.train.nonfinite: Input should be"),
    "split_sizes": _recipe_case(_set("data.val_size", 0.8), "test_size + val_size must be < 1"),
    "duplicate_seeds": _recipe_case(_set("seeds", [1, 1]), "recipe.seeds: seeds must be distinct"),
    "unknown_loss": _recipe_case(_set("losses.0.name", "kl_div"), "recipe.losses[0].name: unknown loss 'kl_div'"),
    "unknown_loss_param": _recipe_case(_set("losses.0", {"name": "kd", "temprature": 2.0}),
                                       "recipe.losses[0]: KDLoss has no parameter 'temprature'"),
    "duplicate_loss": _recipe_case(_set("losses.1", {"name": "kd"}), "recipe.losses: ['kd'] appear more than once"),
    # files and code references
    "missing_recipe": lambda tmp_path, tiny: (_distill(str(tmp_path / "nope.yaml"), tmp_path), "does not exist"),
    "unknown_source": _recipe_case(_set("data.source", "sklearn:mnist"), "recipe.data.source: unknown"),
    "py_module_missing": _recipe_case(_set("student", {"model": "py:no_such_pkg.models:make"}),
                                      "recipe.student.model: cannot import module 'no_such_pkg.models'"),
    "py_attr_missing": _recipe_case(_set("student", {"model": "py:json:no_such_factory"}),
                                    "recipe.student.model: 'json' has no attribute 'no_such_factory'"),
    "py_ref_malformed": _recipe_case(_set("data.source", "py:only_a_module"), "write it as 'py:package.module:attr'"),
    "model_prefix": _recipe_case(_set("student", {"model": "resnet18"}),
                                 "recipe.student.model: 'resnet18' has no known prefix"),
    "teacher_without_weights": _recipe_case(_set("teacher", {"model": "builtin:mlp"}),
                                            "recipe.teacher: the teacher has no weights"),
    "checkpoint_missing": _recipe_case(_set("teacher", {"model": "builtin:mlp", "checkpoint": "nope.safetensors"}),
                                       "recipe.teacher.checkpoint: weights file"),
    "checkpoint_garbage": _recipe_case(_teacher_weights((32,), garbage=True),
                                       "recipe.teacher.checkpoint: cannot read weights"),
    "checkpoint_shapes": _recipe_case(_teacher_weights((8,)),
                                      "recipe.teacher.checkpoint: the weights do not fit the model"),
    # models: layers, shapes, vocabularies, devices
    "layer_missing": _recipe_case(_set("taps", {"student": {"h": "blocks.7"}}),
                                  "recipe.taps.student.h: unknown submodule of MLP 'blocks.7'"),
    "tap_undeclared": _recipe_case(_set("losses.1", {"name": "fitnet", "pairs": [["h", "h"]]}),
                                   "recipe.taps.student: the losses read ['h'], which are not declared"),
    "too_few_outputs": _recipe_case(_set("student.args", {"hidden": [4], "num_classes": 2}),
                                    "labels go up to 2 but the student has 2 outputs"),
    "vocabulary_mismatch": _recipe_case(_set("teacher.args", {"hidden": [8], "num_classes": 5}),
                                        "recipe.teacher / recipe.student (checked on one batch): kd: student"),
    "student_on_meta_device": _recipe_case(_on_meta_device, "recipe.student: parameters on device meta"),
    # data
    "empty_dataset": _data_module_case("return np.zeros((0, 4), 'float32'), np.zeros(0, 'int64')",
                                       "the dataset is empty"),
    "length_mismatch": _data_module_case("return np.zeros((10, 4), 'float32'), np.zeros(9, 'int64')",
                                         "10 inputs but 9 labels"),
    "negative_labels": _data_module_case("return np.zeros((20, 4), 'float32'), -np.ones(20, 'int64')",
                                         "labels must be >= 0"),
    "float_labels": _data_module_case("return np.zeros((20, 4), 'float32'), np.zeros(20, 'float32')",
                                      "labels must be integer class ids"),
    "too_few_labels": _recipe_case(_set("data.student_labels", 2),
                                   "recipe.data.student_labels: 2 labelled samples cannot cover 3 classes"),
    # command-line arguments and output folders
    "bad_seeds": lambda tmp_path, tiny: (_distill(write_recipe(tmp_path, tiny), tmp_path, "--seeds", "a,b"),
                                         "--seeds 'a,b': give comma-separated integers"),
    "bad_override": lambda tmp_path, tiny: (_distill(write_recipe(tmp_path, tiny), tmp_path, "--set", "train.lr"),
                                            "write overrides as key.path=value"),
    "override_nowhere": lambda tmp_path, tiny: (
        _distill(write_recipe(tmp_path, tiny), tmp_path, "--set", "losses.9.weight=1"), "no such place"),
    "list_target": lambda tmp_path, tiny: (["list", "gadgets"], "unknown list target 'gadgets'"),
    "inspect_args": lambda tmp_path, tiny: (["inspect", "builtin:mlp", "--args", "{hidden"], "--args: not valid JSON"),
    "eval_not_a_run": lambda tmp_path, tiny: (["eval", str(tmp_path)], "has no recipe.resolved.yaml"),
    "eval_set_too_small": _eval_set_too_small,
    "out_is_a_file": _out_is_a_file,
    "run_exists": _existing_run(),
    "resume_other_recipe": _existing_run("--resume", _set("teacher.train.lr", 0.02)),
    # student initialisation (tests/test_student_init.py): from_teacher and pretrain
    "from_teacher_and_pretrain": _recipe_case(
        _set("student", {"model": "from_teacher",
                         "pretrain": {"model": "builtin:mlp", "data": {"source": "sklearn:iris"}}}),
        "recipe.student.model: 'from_teacher' (start from the teacher's layers) and recipe.student.pretrain"),
    "from_teacher_of_an_ensemble": _recipe_case(
        lambda tiny, tmp_path: tiny.update(student={"model": "from_teacher"},
                                           teacher={"members": [tiny["teacher"], tiny["teacher"]]}),
        "recipe.student.model: 'from_teacher' copies the layers of one teacher model"),
    "from_teacher_of_an_mlp": _recipe_case(_set("student", {"model": "from_teacher"}),
                                           "recipe.student.model: 'from_teacher' needs a transformers teacher"),
    "pretrain_shares_nothing": _recipe_case(_pretrain_unrelated, "recipe.student.pretrain.model: no tensor of the"),
}


def test_the_table_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, tmp_path, capsys, monkeypatch, tiny_recipe_dict):
    monkeypatch.chdir(tmp_path)
    args, message = CASES[name](tmp_path, tiny_recipe_dict)
    code, _, err = run_cli(args, capsys)
    assert code == 2, (name, err)
    assert err.startswith("error: ") and message in err, (name, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
    assert any(word in err.lower() for word in FIX_WORDS), (name, err)


def test_python_tag_runs_no_code(tmp_path, capsys):
    """`!!python/...` tags are refused by the safe loader before anything is constructed."""
    marker = tmp_path / "PWNED"
    path = write_recipe(tmp_path, f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    code, _, err = run_cli(["distill", path, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "could not determine a constructor" in err and not marker.exists()
    assert yaml.safe_load("a: 1") == {"a": 1} and torch.zeros(1).device.type == "cpu"
