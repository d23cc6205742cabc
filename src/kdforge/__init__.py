"""kdforge: knowledge distillation, from teacher to student to a report of how closely they agree."""

__version__ = "0.1.0"

from kdforge.api import DistillResult, distill  # noqa: E402
from kdforge.capture import Capture  # noqa: E402
from kdforge.errors import KDForgeError, RecipeError, ShapeMismatchError, TrainingError, UnknownNameError  # noqa: E402
from kdforge.losses import LOSSES, DistillLoss, Outputs, Targets  # noqa: E402
from kdforge.pipeline import RunResult, run_recipe  # noqa: E402
from kdforge.recipe import DataSpec, LossTerm, ModelSpec, Recipe, TeacherSpec, TrainConfig, load_recipe  # noqa: E402

__all__ = [
    "LOSSES", "Capture", "DataSpec", "DistillLoss", "DistillResult", "KDForgeError", "LossTerm", "ModelSpec",
    "Outputs", "Recipe", "RecipeError", "RunResult", "ShapeMismatchError", "Targets", "TeacherSpec", "TrainConfig",
    "TrainingError", "UnknownNameError", "__version__", "distill", "load_recipe", "run_recipe",
]
