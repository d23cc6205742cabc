"""The one door to user code: an explicit `py:package.module:attr` reference named in a recipe."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from kdforge.errors import RecipeError
from kdforge.validation import did_you_mean

PY_PREFIX = "py:"


def is_py_ref(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PY_PREFIX)


def resolve_py_ref(ref: str, where: str, search_dir: str | Path | None = None) -> Any:
    """Import `package.module` and return its `attr` (dotted attributes allowed).

    `search_dir` (the recipe's folder) is put on `sys.path` first so a recipe can name a module that sits
    beside it; nothing is imported that the reference does not name.
    """
    body = ref[len(PY_PREFIX):] if ref.startswith(PY_PREFIX) else ref
    module_name, sep, attr_path = body.partition(":")
    if not sep or not module_name or not attr_path:
        raise RecipeError(f"{where}: {ref!r} is not a valid reference; write it as 'py:package.module:attr'.")
    if search_dir is not None:
        folder = str(Path(search_dir).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(
            f"{where}: cannot import module {module_name!r} from {ref!r} ({exc}). "
            "Make it importable (install it, or put it next to the recipe or on PYTHONPATH)."
        ) from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            public = [name for name in dir(obj) if not name.startswith("_")]
            raise RecipeError(
                f"{where}: {module_name!r} has no attribute {part!r} (from {ref!r}).{did_you_mean(part, public)} "
                "Check the name after the ':'."
            )
        obj = getattr(obj, part)
    return obj
