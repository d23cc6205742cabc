"""`kdforge --help` pays for typer and rich only: the commands import what they need when they run; resolving the
Python API (and what `kdforge distill` imports before it reads its recipe) leaves scikit-learn, SciPy and Accelerate
until a split, a statistic or a process layout needs them."""

import subprocess
import sys


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_the_cli_module_loads_neither_torch_nor_sklearn_nor_matplotlib():
    loaded = loaded_after("import kdforge.cli")
    assert "typer" in loaded
    assert not {"torch", "sklearn", "matplotlib", "transformers", "kdforge.report"} & loaded


def test_importing_kdforge_loads_no_matplotlib():
    assert "matplotlib" not in loaded_after("import kdforge")


def test_the_tree_package_resolves_its_names_on_use_and_keeps_munge_a_function():
    loaded = loaded_after("from kdforge.trees import MungeSampler, munge; assert callable(munge) and "
                          "not isinstance(munge, type(sys))")
    assert "kdforge.trees.munge" in loaded


def test_resolving_the_python_api_and_the_distill_command_loads_neither_sklearn_nor_scipy_nor_accelerate():
    loaded = loaded_after("import kdforge, kdforge.api; kdforge.distill; kdforge.Distiller; "
                          "import kdforge.app.run, kdforge.recipe")
    assert "torch" in loaded and "kdforge.app.build" in loaded  # the statement did resolve the training path
    heavy = {"sklearn", "scipy", "accelerate", "matplotlib", "transformers"}
    assert not heavy & loaded, sorted(name for name in loaded if name.split(".")[0] in heavy)[:5]
