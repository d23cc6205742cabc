"""Python objects the API hands to a run in place of what a recipe names (a module, a loss, data in memory).

A recipe names everything by string; the Python API may hold the things themselves. They travel beside the
recipe through the same build step, so a run from Python and a run from YAML differ only in where the objects
came from.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from kdforge.data import DataBundle
from kdforge.models import object_spec


@dataclass
class Given:
    """What the caller already holds: the teacher, the student (a module, or a factory called once per seed),
    the data, and loss modules by term name."""

    teacher: nn.Module | None = None
    student: nn.Module | Callable[[], nn.Module] | None = None
    data: DataBundle | None = None
    losses: dict[str, nn.Module] = field(default_factory=dict)

    def new_student(self) -> tuple[nn.Module, str, dict]:
        """A fresh student: the factory's new module (seeded by the caller), or a copy of the given one, so every
        seed and the scratch twin start from the same weights and the caller's module is left as it was."""
        if isinstance(self.student, nn.Module):
            model = copy.deepcopy(self.student)
        else:
            model = self.student()
            if not isinstance(model, nn.Module):
                raise TypeError(f"student: the factory returned {type(model).__name__}, not a torch.nn.Module.")
        return model, object_spec(model), {}


NOTHING = Given()
