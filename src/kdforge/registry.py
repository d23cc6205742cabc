"""One generic registry; its instances hold the names a recipe may use (losses, datasets, built-in models)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kdforge.validation import unknown_name

T = TypeVar("T")

RESERVED_PARAMETERS = ("name", "weight", "start_step", "stop_step")  # keys a recipe loss term keeps


class Registry(Generic[T]):
    """Maps lower-case names to classes or factories.

    Registering a name twice raises unless `override=True`: silently replacing a built-in method is how two
    runs end up meaning different things by the same recipe.
    """

    def __init__(self, kind: str, reserved: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.reserved = reserved
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, *, override: bool = False, **meta: Any) -> Callable[[T], T]:
        """Decorator: `@LOSSES.register("kd", example={...}, paper="...")`."""
        if name != name.lower() or not name.replace("_", "").replace(":", "").isalnum():
            raise ValueError(f"{self.kind} names are lower-case snake_case; got {name!r}.")

        def decorator(obj: T) -> T:
            if name in self._entries and not override:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass override=True to replace it.")
            self._check_signature(name, obj)
            self._entries[name] = obj
            self._meta[name] = meta
            return obj

        return decorator

    def _check_signature(self, name: str, obj: Any) -> None:
        if not self.reserved:
            return
        target = obj.__init__ if inspect.isclass(obj) else obj
        for param in inspect.signature(target).parameters.values():
            if param.name in self.reserved:
                raise ValueError(f"{self.kind} {name!r}: parameter {param.name!r} is reserved in recipes; rename it.")
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ValueError(f"{self.kind} {name!r}: *args/**kwargs are not allowed; the signature is the schema.")

    def get(self, name: str, where: str = "") -> T:
        """The registered object; an unknown name raises UnknownNameError with close matches."""
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries, where=where)
        return self._entries[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


LOSSES: Registry = Registry("loss", reserved=RESERVED_PARAMETERS)
DATASETS: Registry = Registry("dataset")
MODELS: Registry = Registry("built-in model")
