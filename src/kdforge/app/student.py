"""The student of a seed at its starting weights, and its scratch twin (the baseline a distilled student must
beat): the same model, seed, steps and batch size, trained with cross-entropy on the labelled rows alone."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from kdforge import io
from kdforge.app.build import plain_training
from kdforge.app.given import NOTHING, Given
from kdforge.app.pretrain import pretrained
from kdforge.app.teacher import model_from_spec, obtain_teacher
from kdforge.data import DataBundle
from kdforge.errors import RecipeError
from kdforge.models import copy_matching_weights, count_params, save_model
from kdforge.processes import seed_everything
from kdforge.recipe import FROM_TEACHER, Recipe
from kdforge.train.loop import steps_for

logger = logging.getLogger("kdforge")


def build_student(recipe: Recipe, seed: int, data: DataBundle, run_dir: Path, resume: bool,
                  teacher: nn.Module | None = None, given: Given = NOTHING) -> tuple[nn.Module, str, dict]:
    """The student for `seed` at its starting weights, with the spec and args that rebuild it.

    The distilled student and its scratch twin both start here, so for a seed they start from the same weights
    (the fair comparison): the factory's seeded initialisation; with `model: from_teacher`, the recipe teacher's
    chosen layers (`teacher`, or reloaded from the run when None); with `pretrain:`, the factory's initialisation
    overwritten by every matching tensor of the model pre-trained once per run in `<run>/pretrain/`. What was done is
    written to `<run>/student_init.json` for the report.
    """
    spec = recipe.student
    if spec.model == FROM_TEACHER and teacher is None:
        teacher = obtain_teacher(recipe, data, run_dir, True, given)
    pretrained_model, pretrain_metrics = (None, None) if spec.pretrain is None else pretrained(recipe, run_dir,
                                                                                                resume)
    seed_everything(seed)  # after any loading or pre-training, so the seed alone fixes the rest
    if given.student is not None:
        student, model_spec, args = given.new_student()
    else:
        student, model_spec, args = model_from_spec(spec, recipe, data, "recipe.student", teacher)
    if pretrained_model is not None:
        copied = copy_matching_weights(pretrained_model.state_dict(), student)
        if not copied.names:
            raise RecipeError(
                f"recipe.student.pretrain.model: no tensor of the pre-trained {type(pretrained_model).__name__} "
                f"matches the student's {type(student).__name__} by name and shape, so pre-training would change "
                "nothing. Use the student's architecture with a pre-training head (BertForMaskedLM for a "
                "BertForSequenceClassification student)."
            )
        logger.info("student seed %d: %d of %d tensors copied from the pre-trained model", seed, len(copied.names),
                    copied.total)
        init = {"init": "pretrained", "copied": len(copied.names), "student_tensors": copied.total,
                "prefixes": [copied.source_prefix, copied.target_prefix], "pretrain": pretrain_metrics}
    elif spec.model == FROM_TEACHER:
        init = {"init": "from_teacher", "args": spec.args, "teacher_params": count_params(teacher)}
    else:
        return student, model_spec, args
    if io.is_writer():
        io.write_json(run_dir / "student_init.json", init)
    return student, model_spec, args


def train_scratch(recipe: Recipe, seed: int, data: DataBundle, folder: Path, resume: bool,
                  teacher: nn.Module | None = None, given: Given = NOTHING) -> nn.Module:
    """The same student, same seed (same initial weights), same optimizer steps and batch size, trained with
    cross-entropy on the labelled samples only: the baseline a distilled student must beat."""
    cfg = recipe.train.model_copy(update={"seed": seed})
    student, model_spec, args = build_student(recipe, seed, data, folder.parent.parent, resume, teacher, given)
    total_steps = steps_for(cfg, len(data.student_train))
    plain_training(student, recipe.student.inputs, data, cfg, data.scratch_train, folder, recipe.eval.batch_size,
                   resume, f"scratch seed {seed}", total_steps)
    save_model(student, folder, model_spec, args, recipe.student.inputs)
    return student
