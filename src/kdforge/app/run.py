"""Run a recipe end to end: teacher (loaded or trained), one student per seed (and its scratch twin), evaluation on
the held-out split, and the report. Every stage writes into the run folder and is skipped when `--resume` finds it
complete; an interrupted stage resumes from its last checkpoint.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kdforge import io
from kdforge.app.build import build
from kdforge.app.data import load_recipe_data, save_preprocess
from kdforge.app.early import check_before_teacher
from kdforge.app.evaluation import check_label_free, lm_bits_per_byte, test_result
from kdforge.app.given import NOTHING, Given
from kdforge.app.preflight import check_lm_recipe
from kdforge.app.rundir import ModelResult, RunResult, environment, prepare_run_dir, save_summary, save_tokenizer
from kdforge.app.student import build_student, train_scratch
from kdforge.app.teacher import model_from_spec, run_teacher
from kdforge.data import DataBundle
from kdforge.evaluate import accuracy_summary, is_label_free, predict_logits
from kdforge.imports import py_refs, vouch
from kdforge.models import count_params, load_saved_model, load_weights, object_spec, save_model
from kdforge.recipe import Recipe
from kdforge.report import write_report
from kdforge.train.divergence import detect_divergence, divergence_message, read_log

logger = logging.getLogger("kdforge")


def run_recipe(recipe: Recipe, out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
               given: Given = NOTHING) -> RunResult:
    """Everything `kdforge distill` does, from Python (`given`: objects the Python API holds; see app.given).
    The `py:` references of `recipe` are the code it may import, also from model.json files it reads back."""
    with vouch(py_refs(recipe.model_dump(mode="json"))):
        return _run_recipe(recipe, out_dir, resume, overwrite, given)


def _run_recipe(recipe: Recipe, out_dir: str | Path | None, resume: bool, overwrite: bool, given: Given) -> RunResult:
    out = Path(out_dir or recipe.output_dir or f"runs/{recipe.name}")
    recipe.check(provided=given.losses)
    prepare_run_dir(out, recipe, resume, overwrite)
    io.write_json(out / "environment.json", environment())
    started = time.perf_counter()
    data = given.data if given.data is not None else load_recipe_data(recipe.data, recipe.base_dir)
    save_tokenizer(data.tokenizer, out, logger)
    save_preprocess(data, out)
    check_lm_recipe(recipe, data)  # language models: kdforge doctor's checks (errors refuse, warnings log)
    label_free = is_label_free(data.test)
    if label_free:
        check_label_free(recipe, data)
    check_before_teacher(recipe, data, out, resume, given)  # a student-side mistake stops the run now
    teacher = run_teacher(recipe, data, out, resume, given)
    teacher_seconds = time.perf_counter() - started
    if recipe.teacher.train is not None:
        _warn_if_diverged(out / "teacher", "teacher", recipe.teacher.train.lr, "teacher.train", data)
    confidence, inputs_t = recipe.eval.confidence, recipe.teacher.inputs
    teacher_val = predict_logits(teacher, data.val, inputs_t) if data.val is not None else None
    teacher_test = predict_logits(teacher, data.test, inputs_t)
    labels = None if label_free else data.test.tensors["labels"]
    students: dict[int, ModelResult] = {}
    scratch: dict[int, ModelResult] = {}
    report_teacher = teacher
    for seed in recipe.seeds:
        seed_dir = out / f"seed-{seed}"
        t0 = time.perf_counter()
        student, generation_accuracy = distill_generations(recipe, seed, data, teacher, teacher_val, seed_dir, resume,
                                                           given)
        seed_teacher_test = teacher_test
        if recipe.teacher.online:  # each student is compared with the peer it learned with
            peer = _load_saved(seed_dir / "peer", given.teacher, "peer")
            seed_teacher_test = predict_logits(peer, data.test, inputs_t)
            if seed == recipe.seeds[0]:
                report_teacher, teacher_test = peer, seed_teacher_test
        _warn_if_diverged(seed_dir / "student", f"student (seed {seed})", recipe.train.lr, "train", data)
        students[seed] = test_result(student, seed_dir / "student", recipe.student.inputs, data, labels,
                                     seed_teacher_test, confidence, time.perf_counter() - t0)
        if generation_accuracy:
            students[seed].metrics["generation_accuracy"] = generation_accuracy
        if recipe.baseline:
            t0 = time.perf_counter()
            model = _load_or(seed_dir / "scratch", resume, given, lambda seed=seed, d=seed_dir: train_scratch(
                recipe, seed, data, d / "scratch", resume, teacher, given))  # from_teacher copies it: no reload
            _warn_if_diverged(seed_dir / "scratch", f"scratch (seed {seed})", recipe.train.lr, "train", data)
            scratch[seed] = test_result(model, seed_dir / "scratch", recipe.student.inputs, data, labels,
                                        seed_teacher_test, confidence, time.perf_counter() - t0)
    teacher = report_teacher
    teacher_labels = data.test.tensors.get("teacher_labels", labels)  # a cross-tokenizer teacher: its own tokens
    quality = {"dim": teacher_test.shape[1]} if labels is None else {
        **accuracy_summary(teacher_labels, teacher_test, confidence),
        **lm_bits_per_byte(teacher_test, teacher_labels, data.test)}
    teacher_metrics = {**quality, "params": count_params(teacher), "seconds": teacher_seconds}
    report = write_report(out, recipe, data, teacher_metrics, students, scratch, environment(), teacher_model=teacher)
    return RunResult(out, report, teacher, students, scratch)


def distill_student(recipe: Recipe, seed: int, data: DataBundle, teacher: nn.Module,
                    teacher_val: torch.Tensor | None, folder: Path, resume: bool, given: Given = NOTHING) -> nn.Module:
    """Build the student for `seed`, check the setup on one batch, train it against the teacher, and save it
    (with what its loss terms learned and measured). With `teacher.online`, the peer is saved beside it as `peer/`.
    """
    # generation g > 1 is taught by generation g-1, but `from_teacher` still copies the recipe's teacher
    student, model_spec, args = build_student(recipe, seed, data, folder.parent.parent, resume,
                                              teacher if recipe.generations == 1 else None, given)
    with build(recipe, student=student, teacher=teacher, data=data, out_dir=folder, seed=seed,
               teacher_val=teacher_val, given=given) as run:
        run.preflight()
        save_summary(run.fit(resume), folder)
        save_model(student, folder, model_spec, args, recipe.student.inputs)
        if recipe.teacher.online:
            peer = run.job.module.peer
            peer_spec, peer_args = _spec_of(recipe, data, peer, given)
            save_model(peer, folder.parent / "peer", peer_spec, peer_args, recipe.teacher.inputs)
        run.save_method_state(folder, data.test, recipe.student.inputs, recipe.taps.student)
    return student


def distill_generations(recipe: Recipe, seed: int, data: DataBundle, teacher: nn.Module,
                        teacher_val: torch.Tensor | None, seed_dir: Path, resume: bool,
                        given: Given = NOTHING) -> tuple[nn.Module, list]:
    """The student for `seed`; with `generations: N` (born-again networks), generation g > 1 is taught by
    generation g-1, and the test accuracy of every generation is returned beside the last one."""
    student, generation_accuracy = teacher, []
    for generation in range(1, recipe.generations + 1):
        if generation > 1:
            teacher = student
            teacher_val = predict_logits(student, data.val, recipe.student.inputs) if data.val is not None else None
        folder = seed_dir / ("student" if generation == recipe.generations else f"generation-{generation}")
        student = _load_or(folder, resume, given, lambda t=teacher, v=teacher_val, f=folder: distill_student(
            recipe, seed, data, t, v, f, resume, given))
        if recipe.generations > 1 and not is_label_free(data.test):
            logits = predict_logits(student, data.test, recipe.student.inputs)
            generation_accuracy.append(accuracy_summary(data.test.tensors["labels"], logits, 0.95)["accuracy"])
    return student, generation_accuracy


def _warn_if_diverged(folder: Path, name: str, lr: float, where: str, data: DataBundle) -> None:
    """Say, as soon as a stage has trained, when its log shows divergence (the report says it again)."""
    found = detect_divergence(read_log(folder / "log.jsonl"), None if is_label_free(data.test) else
                              data.info.num_classes)
    if found.diverged:
        logger.warning("%s", divergence_message(name, found, where, lr))


def _spec_of(recipe: Recipe, data: DataBundle, peer: nn.Module, given: Given) -> tuple[str, dict]:
    """How the saved peer rebuilds: the recipe teacher's spec and full args, or (given in Python) its class."""
    if given.teacher is not None:
        return object_spec(peer), {}
    _, spec, args = model_from_spec(recipe.teacher, recipe, data, "recipe.teacher")
    return spec, args


def _load_saved(folder: Path, like: nn.Module | None, where: str) -> nn.Module:
    """A model this run saved: rebuilt from its folder, or (given as a Python object) its weights loaded into a
    copy of `like`, the module of the same class the caller holds."""
    if like is not None:
        return load_weights(copy.deepcopy(like), folder, where)
    return load_saved_model(folder, where)[0]


def _load_or(folder: Path, resume: bool, given: Given, train: Callable[[], nn.Module]) -> nn.Module:
    if resume and (folder / "model.json").is_file():
        return _load_saved(folder, given.new_student()[0] if given.student is not None else None, str(folder))
    return train()
