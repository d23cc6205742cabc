"""Record intermediate outputs of named submodules with forward hooks, without changing the user's model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.validation import unknown_name

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def resolve_module(model: nn.Module, path: str, where: str = "") -> nn.Module:
    """The submodule at dotted `path` ('' is the model itself); unknown paths list the closest valid ones."""
    model = unwrap(model)
    for prefix in _WRAPPER_PREFIXES:  # a path copied from a wrapped model's named_modules() still works
        if path.startswith(prefix) and path not in dict(model.named_modules()):
            path = path[len(prefix):]
    modules = dict(model.named_modules())
    if path not in modules:
        raise unknown_name(
            f"submodule of {type(model).__name__}", path, [n for n in modules if n],
            where=where, hint="List module paths with: kdforge inspect MODEL_SPEC",
        )
    return modules[path]


def _first_tensor(output: Any) -> Tensor:
    """Hooked modules may return tuples or ModelOutputs (transformer layers); the first tensor is the state."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    raise KDForgeError(f"capture: a hooked module returned {type(output).__name__}, which holds no tensor.")


class Capture:
    """Forward hooks on named submodules: `with capture: model(x)` fills `capture.features`.

    Args:
        model: The model to observe. Wrappers (DDP, torch.compile) are looked through.
        taps: tap name -> dotted module path, e.g. {"feat": "blocks.1"}.
        owner: 'teacher' or 'student', used in error messages.
        where: What the taps mapping is called in error messages (tap "h" is then `{where}.h`); default
            `taps.{owner}`. The application passes e.g. "recipe.taps.student".

    Hooks stay registered for the life of the Capture: `close()` (or `remove()`) detaches them, in a `finally`
    or through the object that owns the Capture. They only record while the `with capture:` block is active,
    so evaluation outside it costs nothing.
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str], owner: str = "model",
                 where: str | None = None) -> None:
        self.taps = dict(taps)
        self.owner = owner
        self.where = where or f"taps.{owner}"
        self.features: dict[str, Tensor] = {}
        self._active = False
        # every path resolved before the first hook, so an unknown one leaves no hook behind
        modules = {tap: resolve_module(model, path, where=f"{self.where}.{tap}") for tap, path in self.taps.items()}
        self._handles = [module.register_forward_hook(self._make_hook(tap)) for tap, module in modules.items()]

    def _make_hook(self, tap: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._active:
                self.features[tap] = _first_tensor(output)

        return hook

    def __enter__(self) -> Capture:
        self.features = {}
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._active = False

    def check_fired(self) -> None:
        """After one forward pass: every tap must have recorded something (a silent empty dict hides bugs)."""
        missing = [f"{tap} ({self.taps[tap]})" for tap in self.taps if tap not in self.features]
        if missing:
            raise KDForgeError(
                f"{self.where}: these hooks never fired during a forward pass: {', '.join(missing)}. "
                "The module exists but is not called by forward(); tap a module on the forward path."
            )

    def remove(self) -> None:
        """Detach every hook (again: a no-op)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def close(self) -> None:
        """The same as `remove()`: the name owners and `contextlib.closing` call."""
        self.remove()
