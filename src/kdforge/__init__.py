"""kdforge: knowledge distillation, from teacher to student to a report of how closely they agree.

The public names (`kdforge.public`) load on first use (PEP 562), so `import kdforge.losses` (or any library module)
does not import the application or the report; `kdforge.distill` and the others resolve when first read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdforge.version import __version__

__all__ = ["Capture", "DataSpec", "DistillLoss", "DistillResult", "Distiller", "EvalOptions", "KDForgeError",
    "LOSSES", "LossTerm", "ModelSpec", "Outputs", "Recipe", "RecipeError", "RunResult", "ShapeMismatchError",
    "Targets", "TeacherSpec", "TrainConfig", "TrainingError", "UnknownNameError", "__version__", "distill",
    "evaluate_pair", "export_student", "load_recipe", "regenerate_report", "run", "run_recipe"
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'kdforge' has no attribute {name!r}")
    from kdforge import public

    value = getattr(public, name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs; not run
    from kdforge.api import Distiller, DistillResult, distill, run
    from kdforge.app.run import run_recipe
    from kdforge.app.rundir import RunResult
    from kdforge.capture import Capture
    from kdforge.errors import KDForgeError, RecipeError, ShapeMismatchError, TrainingError, UnknownNameError
    from kdforge.evaluate import EvalOptions, evaluate_pair
    from kdforge.export import export_student
    from kdforge.losses import LOSSES, DistillLoss, Outputs, Targets
    from kdforge.recipe import DataSpec, LossTerm, ModelSpec, Recipe, TeacherSpec, TrainConfig, load_recipe
    from kdforge.report.run import regenerate_report
