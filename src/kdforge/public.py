"""Every public name of the package in one place; `kdforge.<name>` reads from here on first use (see the root
`__init__`: importing the package itself stays light)."""

from __future__ import annotations

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

__all__ = ["Capture", "DataSpec", "DistillLoss", "DistillResult", "Distiller", "EvalOptions", "KDForgeError",
    "LOSSES", "LossTerm", "ModelSpec", "Outputs", "Recipe", "RecipeError", "RunResult", "ShapeMismatchError",
    "Targets", "TeacherSpec", "TrainConfig", "TrainingError", "UnknownNameError", "distill",
    "evaluate_pair", "export_student", "load_recipe", "regenerate_report", "run", "run_recipe"
]
