"""One generic registry; its instances hold the names a recipe may use (losses, datasets, built-in models).

Each entry keeps a typed info record besides the object (`LossInfo` for losses), so what a method declares
(its example arguments, paper, extra step, post-training measurement) is checked when its module is imported
rather than discovered as a missing dict key in the middle of a run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from kdforge.validation import unknown_name

if TYPE_CHECKING:
    from torch import nn

    from kdforge.types import TensorData

T = TypeVar("T")
InfoT = TypeVar("InfoT")

RESERVED_PARAMETERS = ("name", "weight", "start_step", "stop_step")  # keys a recipe loss term keeps

#: Takes the standard training step and returns the method's own (GKD: on-policy rollouts, then the standard
#: step). The step's signature is `kdforge.losses.protocols.StepFn`; it is spelt loosely here because it names
#: the losses' types, a layer above this module.
StepWrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


class MethodEvaluator(Protocol):
    """A method's own measurement after training, on the test split (the early-exit curve, a draft model's
    acceptance rate): called with the trained loss term, the student, the teacher model (None when there is
    none, e.g. a cached teacher), the test split, the student's input keys and its tap paths (name -> module
    path). Returns a JSON-ready dict, or None when the measurement does not apply."""

    def __call__(self, loss: nn.Module, student: nn.Module, teacher: nn.Module | None, test: TensorData,
                 inputs: list[str], taps: Mapping[str, str]) -> dict[str, Any] | None: ...


@dataclass(frozen=True, kw_only=True)
class EntryInfo:
    """What a dataset or built-in model declares: an optional summary for `kdforge list` (else its docstring)."""

    summary: str = ""


@dataclass(frozen=True, kw_only=True)
class LossInfo:
    """What a loss method declares besides its class. `example` holds the smallest valid constructor arguments,
    on the standard tap names ("feat", "head2"), so the contract tests build every loss without per-method code;
    `nonzero_at_match` is the reason a loss is not zero when the student equals the teacher."""

    summary: str
    paper: str
    example: Mapping[str, Any]
    step: StepWrapper | None = None
    evaluate: MethodEvaluator | None = None
    nonzero_at_match: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "example", MappingProxyType(dict(self.example)))  # callers cannot edit the entry


class Registry(Generic[T, InfoT]):
    """Maps lower-case names to classes or factories, each with an info record built by `info`.

    Registering a name twice raises unless `override=True`: silently replacing a built-in method is how two
    runs end up meaning different things by the same recipe.
    """

    def __init__(self, kind: str, reserved: tuple[str, ...] = (), *, info: Callable[..., InfoT] = EntryInfo) -> None:
        self.kind, self.reserved, self._make_info = kind, reserved, info
        self._entries: dict[str, tuple[T, InfoT]] = {}

    def register(self, name: str, *, override: bool = False, **info: Any) -> Callable[[T], T]:
        """Decorator: `@LOSSES.register("kd", summary=..., paper=..., example={...})`. The keywords are the info
        record's fields: a misspelt or missing one raises TypeError when the registering module is imported."""
        if name != name.lower() or not name.replace("_", "").replace(":", "").isalnum():
            raise ValueError(f"{self.kind} names are lower-case snake_case; got {name!r}.")
        try:
            record = self._make_info(**info)
        except TypeError as error:
            raise TypeError(f"{self.kind} {name!r}: {error}") from error

        def decorator(obj: T) -> T:
            if name in self._entries and not override:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass override=True to replace it.")
            self._check_signature(name, obj)
            self._entries[name] = (obj, record)
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
        return self._entries[name][0]

    def info(self, name: str) -> InfoT:
        """The entry's info record; an unknown name raises as `get` does."""
        self.get(name)
        return self._entries[name][1]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


LOSSES: Registry[type, LossInfo] = Registry("loss", reserved=RESERVED_PARAMETERS, info=LossInfo)
DATASETS: Registry[Callable[..., Any], EntryInfo] = Registry("dataset")
MODELS: Registry[Callable[..., Any], EntryInfo] = Registry("built-in model")
