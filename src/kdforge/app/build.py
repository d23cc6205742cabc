"""The one build step between a recipe and the library's loop: `build(recipe, ...) -> Run`.

A `Run` is one model ready to train: the trainable module (student + loss terms, or the mutual pair), where the
teacher's outputs come from (online, or the cache), the step function (the standard one, or the one a method
registers), the validation function, the method evaluators, and the preflight that checks it all on one batch.
The CLI, the Python API, the teacher's and scratch twin's cross-entropy training and the tests all come here, so
what a recipe can do, Python can do, and both are checked the same way.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge import io
from kdforge.app.cache import cached_teacher
from kdforge.app.given import NOTHING, Given
from kdforge.app.preflight import preflight
from kdforge.app.rundir import save_summary
from kdforge.data import DataBundle
from kdforge.errors import RecipeError
from kdforge.evaluate import validator
from kdforge.lm.cross_data import is_paired
from kdforge.losses import LOSSES  # importing the package registers every loss
from kdforge.losses.base import DistillLoss, WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.processes import make_accelerator
from kdforge.recipe import LossTerm, Recipe, TrainConfig, check_loss_term
from kdforge.train.config import LoopConfig
from kdforge.train.loop import TrainJob, TrainSummary, fit, steps_for
from kdforge.train.module import DistillModule, OnlineTeacher, TeacherSource, standard_step
from kdforge.train.mutual import MutualModule
from kdforge.train.schedule import TermSchedule
from kdforge.types import TensorData

logger = logging.getLogger("kdforge")


def loop_config(train: TrainConfig) -> LoopConfig:
    """The recipe's `train:` block as the training loop's settings (validated: the schema checked them)."""
    return LoopConfig(**train.model_dump())


def build_loss(terms: Sequence[LossTerm], modules: Mapping[str, DistillLoss] | None = None) -> WeightedSum:
    """The recipe's loss terms, each checked and built, with their weights (`build_schedule` says when each
    one counts). A term named in `modules` (a loss the Python API was given as an object) is that module."""
    modules = modules or {}
    losses = {}
    for i, term in enumerate(terms):
        if term.name in modules:
            losses[term.name] = modules[term.name]
        else:
            check_loss_term(term, where=f"recipe.losses[{i}]")
            losses[term.name] = LOSSES.get(term.name)(**term.params)
    if not any(term.start_step == 0 for term in terms):
        raise RecipeError("recipe.losses: no term is active at step 0; give one term start_step: 0.")
    return WeightedSum(losses, {term.name: term.weight for term in terms})


def build_schedule(terms: Sequence[LossTerm], loss: WeightedSum) -> TermSchedule:
    """When each of `loss`'s terms counts: the recipe terms' step windows and progressive stages."""
    return TermSchedule(loss.terms, {term.name: (term.start_step, term.stop_step) for term in terms},
                        {term.name: term.progressive_steps for term in terms})


@dataclass
class Run:
    """One model ready for the loop (see the module docstring). Use it as a context manager, or call `close`:
    the capture hooks on the user's models are removed however training ends."""

    job: TrainJob
    declared_taps: tuple[set[str], set[str]] = (set(), set())
    evaluators: dict[str, Any] = field(default_factory=dict)
    teacher_model: nn.Module | None = None  # what method evaluators compare with (the peer in mutual learning)

    def preflight(self) -> dict[str, tuple[int, ...]]:
        """One small batch through teacher, student and loss before training (see `kdforge.app.preflight`)."""
        shapes = preflight(self.job.module, self.job.teacher, self.job.data, self.declared_taps,
                           schedule=self.job.schedule)
        if shapes:
            logger.info("captured shapes: %s", shapes)
        return shapes

    def fit(self, resume: bool = False) -> TrainSummary:
        return fit(self.job, make_accelerator(self.job.config.mixed_precision), resume=resume)

    def method_metrics(self, test: TensorData, inputs: list[str], taps: Mapping[str, str]) -> dict[str, Any]:
        """The measurements the loss terms' methods register (the early-exit curve, DistillSpec's acceptance
        rate) on the test split, by term name."""
        module = self.job.module
        measured = {}
        for name, evaluate in self.evaluators.items():
            result = evaluate(module.loss.terms[name], module.student, self.teacher_model, test, inputs, dict(taps))
            if result is not None:
                measured[name] = result
        return measured

    def save_method_state(self, folder: Path, test: TensorData, inputs: list[str], taps: Mapping[str, str]) -> None:
        """What the loss terms learned (projectors, exit heads) as `loss_state.safetensors`, and the method
        measurements as `method_metrics.json`."""
        state = self.job.module.loss.state_dict()
        if state:
            io.save_tensors(folder / "loss_state.safetensors", state)
        measured = self.method_metrics(test, inputs, taps)
        if measured:
            io.write_json(folder / "method_metrics.json", measured)

    def close(self) -> None:
        """Remove every hook this run put on a model (student, teacher); safe to call twice."""
        self.job.module.close()
        if self.job.teacher is not None:
            self.job.teacher.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def step_function(loss_names: Sequence[str]):
    """The standard step, or the one a method registers (GKD's on-policy rollouts) wrapped around it."""
    changing = [name for name in loss_names if name in LOSSES and LOSSES.info(name).step is not None]
    if len(changing) > 1:
        raise RecipeError(f"recipe.losses: {changing} each change the training step itself, and one step cannot do "
                          "both; keep one of them.")
    return LOSSES.info(changing[0]).step(standard_step) if changing else standard_step


def evaluators(loss_names: Sequence[str]) -> dict[str, Any]:
    return {name: LOSSES.info(name).evaluate for name in loss_names
            if name in LOSSES and LOSSES.info(name).evaluate is not None}


def teacher_source(recipe: Recipe, teacher: nn.Module, data: DataBundle | None = None) -> TeacherSource:
    """What the student's loss reads teacher outputs from during training: the store when the recipe names
    `teacher.cache` (checked against this teacher, and `data` when given), else the teacher run online."""
    if recipe.teacher.cache is not None:
        source = cached_teacher(recipe, teacher, data)
        source.sparse = source.holds_topk  # top-k logits reach the losses as TopK (preflight checks they can)
        return source
    return OnlineTeacher(teacher, recipe.teacher.inputs, recipe.taps.teacher, where="recipe.taps.teacher")


def build(recipe: Recipe, *, student: nn.Module, teacher: nn.Module, data: DataBundle, out_dir: Path, seed: int,
          teacher_val: torch.Tensor | None = None, name: str | None = None, given: Given = NOTHING) -> Run:
    """The distillation of `student` from `teacher` as the recipe says (losses, taps, inputs, train settings,
    teacher side), for `seed`, writing checkpoints and the log into `out_dir`.

    With `teacher.online` (deep mutual learning), `teacher` is the peer's starting point: a copy trains together
    with the student. `teacher_val` (the teacher's validation logits) adds agreement to validation.
    """
    cfg = recipe.train.model_copy(update={"seed": seed})
    loss = build_loss(recipe.losses, given.losses)
    mapping = getattr(data, "vocab_map", None)  # cross-tokenizer data: the shared tokens of both vocabularies
    for term in loss.terms.values():
        if mapping is not None and hasattr(term, "set_vocab_map") and term.vocab_map is None:
            term.set_vocab_map(mapping)
    if recipe.teacher.online and any(loss.required_taps()):
        raise RecipeError(
            "recipe.losses: mutual learning (teacher.online) applies every term in both directions, so only "
            "logit-level losses (kd, logit_mse, dkd, ...) fit; remove the feature terms or use a trained teacher."
        )
    names = [term.name for term in recipe.losses]
    step_fn = step_function(names)
    if recipe.teacher.online:
        peer = copy.deepcopy(teacher).train().requires_grad_(True)
        module = MutualModule(student, peer, loss, recipe.student.inputs, recipe.teacher.inputs)
        source, teacher_val, evaluated_against = None, None, peer  # the peer changes: no fixed teacher to agree with
    else:
        module = DistillModule(student, loss, recipe.student.inputs, recipe.taps.student, where="recipe.taps.student")
        source = teacher_source(recipe, teacher) if loss.needs_teacher else None
        evaluated_against = teacher
    validate = None
    if data.val is not None:
        if is_paired(data.val):  # the teacher predicts other tokens: no agreement to measure
            teacher_val = None
        validate = validator(data.val, recipe.student.inputs, teacher_val, recipe.eval.batch_size)
    else:
        cfg = cfg.model_copy(update={"select": "last", "patience": None})
    job = TrainJob(name or f"student seed {seed}", module, source, data.student_train, loop_config(cfg),
                   steps_for(loop_config(cfg), len(data.student_train)), out_dir, validate, step_fn,
                   schedule=build_schedule(recipe.losses, loss), where="recipe.train")
    return Run(job, (set(recipe.taps.student), set(recipe.taps.teacher)), evaluators(names), evaluated_against)


def plain_training(model: nn.Module, inputs: list[str], data: DataBundle, cfg: TrainConfig,
                   train_data: TensorData, folder: Path, eval_batch_size: int, resume: bool, name: str,
                   total_steps: int | None = None) -> None:
    """Cross-entropy training (teacher first, scratch baseline, pre-training): the same loop with one `ce` term
    and no teacher."""
    module = DistillModule(model, WeightedSum({"ce": CELoss()}, {"ce": 1.0}), inputs)
    validate = validator(data.val, inputs, None, eval_batch_size) if data.val is not None else None
    cfg = cfg if validate is not None else cfg.model_copy(update={"select": "last", "patience": None})
    config = loop_config(cfg)
    run = Run(TrainJob(name, module, None, train_data, config, total_steps or steps_for(config, len(train_data)),
                       folder, validate, where="recipe.train"))
    with run:
        run.preflight()
        save_summary(run.fit(resume), folder)
