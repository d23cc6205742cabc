"""Check the student's side of a recipe before the teacher trains.

Training a teacher first can take most of a run. A mistake that only the student's setup shows (a tap path
that does not exist, a `py:` student module that is missing, a loss whose shapes do not fit) used to surface
after it, so the user waited for nothing. Every check that needs the teacher's architecture but not its
trained weights runs here first, on the untrained teacher: the student is built for the first seed and the
whole distillation setup goes through `build(...).preflight()` on one batch. Preflight puts every buffer back,
and the teacher is a copy, so nothing here changes what the run then trains.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from pathlib import Path

from kdforge.app.build import build
from kdforge.app.given import NOTHING, Given
from kdforge.app.teacher import model_from_spec
from kdforge.data import DataBundle
from kdforge.processes import seed_everything
from kdforge.recipe import Recipe

logger = logging.getLogger("kdforge")


def teacher_will_train(recipe: Recipe, out_dir: Path, resume: bool) -> bool:
    """Whether this run trains a (single, offline) teacher before any student: the case worth checking first."""
    spec = recipe.teacher
    finished = resume and (out_dir / "teacher" / "model.json").is_file()
    return spec.train is not None and spec.members is None and not spec.online and not finished


def check_before_teacher(recipe: Recipe, data: DataBundle, out_dir: Path, resume: bool,
                         given: Given = NOTHING) -> None:
    """Run the distillation preflight with the untrained teacher when the teacher is about to be trained, so a
    student-side mistake stops the run before the teacher's training, not after it. Raises what preflight
    raises (a RecipeError naming the field)."""
    if not teacher_will_train(recipe, out_dir, resume):
        return
    seed = recipe.seeds[0]
    given = dataclasses.replace(given, losses={k: copy.deepcopy(v) for k, v in given.losses.items()})
    seed_everything(recipe.teacher.train.seed)
    teacher = (copy.deepcopy(given.teacher) if given.teacher is not None
               else model_from_spec(recipe.teacher, recipe, data, "recipe.teacher")[0])
    seed_everything(seed)
    if given.student is not None:
        student = given.new_student()[0]
    else:  # pre-trained weights (student.pretrain) change values, not shapes: the factory's model is checked
        student = model_from_spec(recipe.student, recipe, data, "recipe.student", teacher)[0]
    # the cache is built from the trained teacher later; here the teacher runs online
    online = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"cache": None})})
    with tempfile.TemporaryDirectory(prefix="kdforge-check-") as scratch, build(
            online, student=student, teacher=teacher, data=data, out_dir=Path(scratch), seed=seed,
            given=given) as run:
        run.preflight()
    logger.info("the student's setup passed its checks on the untrained teacher; training the teacher")
