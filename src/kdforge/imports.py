"""The one door to user code: an explicit `py:package.module:attr` reference named in a recipe.

Trust model (docs/reliability.md): only the recipe the user runs, or a command line they type, names code.
A file kdforge reads back (a run folder's `model.json` or `recipe.resolved.yaml`, an export, a cache manifest)
is data: it is read inside `untrusted(...)`, where a `py:` reference is refused unless the user vouched for it
(`vouch`: the references of the recipe being run, or every reference with `--trust-code` / `trust_code=True`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from kdforge.errors import KDForgeError, RecipeError
from kdforge.validation import did_you_mean

PY_PREFIX = "py:"

_SOURCE: ContextVar[str | None] = ContextVar("kdforge_untrusted_source", default=None)  # the file being read
_VOUCHED: ContextVar[frozenset[str] | None] = ContextVar("kdforge_vouched", default=frozenset())  # None: all


class UntrustedCodeError(KDForgeError):
    """A file kdforge reads back names code to import, and the user has not said to trust it."""


def py_refs(obj: Any) -> set[str]:
    """Every `py:` reference anywhere in a nested dict/list/str (a recipe's dump, a model.json)."""
    if isinstance(obj, str):
        return {obj} if is_py_ref(obj) else set()
    if isinstance(obj, dict):
        return set().union(*(py_refs(v) for v in obj.values())) if obj else set()
    if isinstance(obj, (list, tuple)):
        return set().union(*(py_refs(v) for v in obj)) if obj else set()
    return set()


@contextmanager
def vouch(refs: Iterable[str] | None) -> Iterator[None]:
    """Within it, the `py:` references `refs` (the recipe the user runs), or every one (None: --trust-code), may
    be imported even while reading a file back."""
    current = _VOUCHED.get()
    added = None if refs is None or current is None else current | frozenset(refs)
    token = _VOUCHED.set(added)
    try:
        yield
    finally:
        _VOUCHED.reset(token)


@contextmanager
def untrusted(source: str, trust_code: bool = False) -> Iterator[None]:
    """Read `source` (a file kdforge did not just write for this user) as data: a `py:` reference it names is
    refused unless vouched for; `trust_code` vouches for all of them."""
    with vouch(None if trust_code else ()):
        token = _SOURCE.set(source)
        try:
            yield
        finally:
            _SOURCE.reset(token)


# kdforge's own factories that recipes and saved models name (`py:kdforge.models.sentence:sentence_encoder`): public
# names (`__all__`) of modules below these packages build models, tokenizers or data and write nothing
PACKAGED = ("kdforge.models.", "kdforge.llm.data")


def is_packaged_factory(ref: str) -> bool:
    """Whether `ref` names a public factory of kdforge itself (installed code, not a file's)."""
    module_name, _, attr = ref.removeprefix(PY_PREFIX).partition(":")
    if not any(module_name == p or (p.endswith(".") and module_name.startswith(p)) for p in PACKAGED):
        return False
    try:
        module = importlib.import_module(module_name)  # kdforge's own module: no user code
    except ImportError:
        return False
    return attr in getattr(module, "__all__", ())


def check_trusted(ref: str, where: str) -> None:
    """Raise `UntrustedCodeError` when `ref` comes from a file read back and nobody vouched for it (kdforge's own
    public factories excepted, `is_packaged_factory`)."""
    source, vouched = _SOURCE.get(), _VOUCHED.get()
    if source is not None and vouched is not None and ref not in vouched and not is_packaged_factory(ref):
        raise UntrustedCodeError(
            f"{where}: {source} names code to import ({ref!r}); kdforge reads saved folders as data and imports only "
            f"what the recipe you run or your command line names. If you trust it, pass --trust-code "
            f"(trust_code=True), or name it in your recipe (model: {ref}, checkpoint: FOLDER/model.safetensors)."
        )


def is_py_ref(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PY_PREFIX)


def resolve_py_ref(ref: str, where: str, search_dir: str | Path | None = None) -> Any:
    """Import `package.module` and return its `attr` (dotted attributes allowed).

    `search_dir` (the recipe's folder) is put on `sys.path` first so a recipe can name a module that sits
    beside it; nothing is imported that the reference does not name.
    """
    check_trusted(ref if ref.startswith(PY_PREFIX) else PY_PREFIX + ref, where)
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
