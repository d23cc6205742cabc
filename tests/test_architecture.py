"""The layering of docs/architecture.md, checked on the package's own source: the library never imports the
application, no two modules import each other (directly or around a loop), and the library loads light.

Imports inside functions count: they run too, and hiding a cycle in a function body does not remove it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kdforge

PACKAGE = Path(kdforge.__file__).parent

# The library: these know nothing of recipes, runs, the CLI or reports.
LIBRARY = ("kdforge.types", "kdforge.losses", "kdforge.train", "kdforge.capture", "kdforge.metrics", "kdforge.cache",
           "kdforge.data", "kdforge.models", "kdforge.llm", "kdforge.evaluate", "kdforge.processes",
           "kdforge.layer_maps", "kdforge.trees", "kdforge.lm", "kdforge.loss_paths")
# The application and the recipe schema (`kdforge.trees.recipe`: the tree recipe, beside the trees library).
APPLICATION = ("kdforge.recipe", "kdforge.app", "kdforge.api", "kdforge.cli", "kdforge.export", "kdforge.report",
               "kdforge.trees.recipe", "kdforge.tree_cli")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module an imported name lives in (`kdforge.losses.base.IGNORE_INDEX` -> `kdforge.losses.base`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:` (annotations only; they never run)."""
    for node in ast.iter_child_nodes(tree):
        test = node.test if isinstance(node, ast.If) else None
        if test is not None and "TYPE_CHECKING" in ast.unparse(test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(module: str) -> set[str]:
    """Every kdforge module `module` imports, anywhere in its file (function bodies included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            owner = _owner(name) if name.startswith("kdforge") else None
            if owner is not None and owner != module:
                found.add(owner)
    return found


def _inside(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def edges(module: str) -> set[str]:
    """What importing `module` runs: each imported module, and the package `__init__`s above it that `module`
    is not itself inside (`kdforge.train.loop` importing `kdforge.losses.base` runs `kdforge/losses/__init__.py`)."""
    out = set()
    for target in imports_of(module):
        out.add(target)
        parts = target.split(".")
        for i in range(1, len(parts)):
            package = ".".join(parts[:i])
            if package in MODULES and not _inside(module, (package,)):
                out.add(package)
    return out


def cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph = {m: edges(m) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    return groups


def test_the_package_is_found():
    assert {"kdforge.losses.kd", "kdforge.train.loop", "kdforge.app.build", "kdforge.recipe"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _inside(m, LIBRARY) and not _inside(m, APPLICATION)))
def test_library_modules_do_not_import_the_application(module):
    wrong = sorted(t for t in imports_of(module) if _inside(t, APPLICATION))
    assert not wrong, f"{module} (library) imports {wrong} (application); see docs/architecture.md"


def test_no_import_cycles():
    assert cycles() == []


# Packages that import each other today (no module-level loop): `report.run` (the `kdforge report` command)
# rebuilds a run's data and teacher through `app`, which writes reports.
KNOWN_PACKAGE_PAIRS = {("kdforge.app", "kdforge.report")}


def package_pairs() -> set[tuple[str, str]]:
    """Pairs of top-level packages/modules (`kdforge.llm`, `kdforge.losses`, ...) that import each other."""
    top = {m: ".".join(m.split(".")[:2]) for m in MODULES}
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        for target in imports_of(module):
            if top[module] != top[target]:
                graph.setdefault(top[module], set()).add(top[target])
    return {(a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, set())}


def test_packages_import_each_other_only_where_listed():
    """`kdforge.lm` (row layout, alignment, tokenizers: below the losses and the data) and `kdforge.llm` (checks
    and clients above them) keep LLM code from pulling the losses and the data into a knot; the loss paths'
    declaration (`kdforge.loss_paths`, which encodes cache formats) sits above both the losses and the cache."""
    assert package_pairs() == KNOWN_PACKAGE_PAIRS


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The checks above can fail: today's `kdforge.app.run` imports `kdforge.app.build`, and a planted reverse
    import would close a loop; `kdforge.train.loop` is library and `kdforge.recipe` is application."""
    assert "kdforge.app.build" in imports_of("kdforge.app.run")
    assert "kdforge.losses" in edges("kdforge.train.loop") or "kdforge.losses.base" in edges("kdforge.train.loop")
    assert _inside("kdforge.train.loop", LIBRARY) and _inside("kdforge.recipe", APPLICATION)


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_losses_loads_neither_matplotlib_nor_the_application():
    loaded = _loaded_after("import kdforge.losses")
    assert "matplotlib" not in loaded
    assert not {m for m in loaded if _inside(m, APPLICATION)}


def test_the_root_package_is_light_and_resolves_its_names_on_use():
    assert "torch" not in _loaded_after("import kdforge")
    loaded = _loaded_after("import kdforge; kdforge.distill")
    assert "kdforge.api" in loaded and "matplotlib" not in loaded
