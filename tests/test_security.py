"""Security: weights only through safetensors or `torch.load(weights_only=True)`, YAML only through
`safe_load`, no code from a recipe but the `py:` reference it names; the recipe loader raises only kdforge's
own errors whatever YAML it is given (hypothesis)."""

import ast
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdforge.errors import KDForgeError
from kdforge.recipe import load_recipe, recipe_from_dict

SRC = Path(__file__).resolve().parents[1] / "src" / "kdforge"


def _calls(name: str):
    """(file, line, call) for every call of `x.<name>(...)` or `<name>(...)` in the package source."""
    for file in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    yield file.relative_to(SRC), node.lineno, node


def test_torch_load_always_has_weights_only_true():
    calls = list(_calls("load"))
    torch_loads = [(f, line, c) for f, line, c in calls
                   if isinstance(c.func, ast.Attribute) and getattr(c.func.value, "id", "") == "torch"]
    assert torch_loads, "expected the checkpoint and weights loaders to call torch.load"
    for file, line, call in torch_loads:
        flags = {k.arg: k.value for k in call.keywords}
        assert "weights_only" in flags and isinstance(flags["weights_only"], ast.Constant) \
            and flags["weights_only"].value is True, f"{file}:{line}: torch.load without weights_only=True"


def test_no_unsafe_deserialisers_in_the_package():
    banned = {"pickle": {"load", "loads", "Unpickler"}, "yaml": {"load", "unsafe_load", "full_load", "load_all",
                                                                  "unsafe_load_all", "full_load_all"},
              "marshal": {"load", "loads"}, "dill": {"load", "loads"}, "joblib": {"load"}}
    found = []
    for file in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = getattr(node.func.value, "id", None)
                if node.func.attr in banned.get(owner, ()):
                    found.append(f"{file.relative_to(SRC)}:{node.lineno}: {owner}.{node.func.attr}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("eval", "exec"):
                found.append(f"{file.relative_to(SRC)}:{node.lineno}: {node.func.id}()")
    assert not found, found


def test_only_the_imports_module_imports_user_code():
    """importlib.import_module appears only behind the explicit `py:package.module:attr` door."""
    users = {str(f) for f, _, _ in _calls("import_module")} | {str(f) for f, _, _ in _calls("__import__")}
    assert users == {"imports.py"}, users


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!!python/module:os",
])
def test_python_yaml_tags_are_refused(tmp_path, tag):
    marker = tmp_path / "PWNED"
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: {tag.format(marker=marker)}\n")
    with pytest.raises(KDForgeError, match="malformed YAML"):
        load_recipe(path)
    assert not marker.exists()


def test_a_recipe_imports_only_the_module_it_names(tmp_path, tiny_recipe_dict):
    (tmp_path / "kdf_sec_named.py").write_text("import torch\ndef make(**kw):\n    return torch.nn.Linear(4, 3)\n")
    (tmp_path / "kdf_sec_other.py").write_text("raise SystemExit('imported without being named')\n")
    recipe = {**tiny_recipe_dict, "student": {"model": "py:kdf_sec_named:make"}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    load_recipe(path)
    assert "kdf_sec_named" not in sys.modules  # validating a recipe imports nothing
    from kdforge.models import build_model

    build_model("py:kdf_sec_named:make", {}, None, "recipe.student", tmp_path)
    assert "kdf_sec_named" in sys.modules and "kdf_sec_other" not in sys.modules


# ---------------------------------------------------------------- property: only kdforge's errors

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12), st.sampled_from(["kd", "ce", "builtin:mlp", "sklearn:iris", "py:x:y",
                                                            "py:", "adam", "cosine", "5e-4", "-1", "skip"]))
_keys = st.one_of(st.sampled_from(["name", "seeds", "teacher", "student", "data", "losses", "train", "taps", "model",
                                   "args", "source", "lr", "epochs", "batch_size", "cache", "members", "weight",
                                   "temperature", "path", "checkpoint", "inputs", "nonfinite", "eval", "dir"]),
                  st.text(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(_keys, inner, max_size=5)), max_leaves=25)


def _near_valid(tiny):
    """The tiny recipe with one field replaced by arbitrary data (reaches deeper validators than random dicts)."""
    return st.tuples(st.sampled_from([*tiny, "teacher.train", "train.lr", "losses.0", "data.source", "student.args"]),
                     _values)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_values)
def test_recipe_from_dict_raises_only_kdforge_errors(data):
    try:
        recipe_from_dict(data)
    except KDForgeError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=st.data())
def test_recipe_from_dict_near_valid_raises_only_kdforge_errors(change, tiny_recipe_dict):
    import copy

    field, value = change.draw(_near_valid(tiny_recipe_dict))
    data = copy.deepcopy(tiny_recipe_dict)
    node, *_ = [data]
    *parents, last = field.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    overrides = change.draw(st.lists(st.text(max_size=15), max_size=2))
    try:
        recipe_from_dict(data, overrides=overrides)
    except KDForgeError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), _values.map(lambda v: yaml.safe_dump(v, default_flow_style=None)),
                      st.binary(max_size=100).map(lambda b: b.decode("latin-1"))))
def test_load_recipe_on_arbitrary_text_raises_only_kdforge_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_recipe(path)
    except KDForgeError:
        pass
