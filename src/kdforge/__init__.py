"""kdforge: knowledge distillation, from teacher to student to a report of how closely they agree."""

__version__ = "0.1.0"

from kdforge.api import DistillResult, distill  # noqa: E402
from kdforge.capture import Capture  # noqa: E402
from kdforge.errors import KDForgeError, RecipeError, ShapeMismatchError, TrainingError, UnknownNameError  # noqa: E402
from kdforge.evaluate import EvalOptions, evaluate_pair  # noqa: E402
from kdforge.export import export_student  # noqa: E402
from kdforge.losses import LOSSES, DistillLoss, Outputs, Targets  # noqa: E402
from kdforge.pipeline import RunResult, run_recipe  # noqa: E402
from kdforge.recipe import DataSpec, LossTerm, ModelSpec, Recipe, TeacherSpec, TrainConfig, load_recipe  # noqa: E402
from kdforge.report.run import regenerate_report  # noqa: E402

__all__ = [
    "LOSSES", "Capture", "DataSpec", "DistillLoss", "DistillResult", "EvalOptions", "KDForgeError", "LossTerm",
    "ModelSpec", "Outputs", "Recipe", "RecipeError", "RunResult", "ShapeMismatchError", "Targets", "TeacherSpec",
    "TrainConfig", "TrainingError", "UnknownNameError", "__version__", "distill", "evaluate_pair", "export_student",
    "load_recipe", "regenerate_report", "run_recipe",
]
