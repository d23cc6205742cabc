"""Run a recipe end to end: teacher (loaded or trained), one student per seed (and its scratch twin),
evaluation on the held-out split, and the report. Every stage writes into the run folder and is skipped
when `--resume` finds it complete; an interrupted stage resumes from its last checkpoint.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge import io
from kdforge.build import build_loss, make_accelerator, preflight, process_state, seed_everything
from kdforge.data import DataBundle, load_data
from kdforge.errors import KDForgeError, RecipeError
from kdforge.evaluate import (
    accuracy_summary,
    agreement_summary,
    is_label_free,
    positions,
    predict_logits,
    validator,
)
from kdforge.losses.base import WeightedSum
from kdforge.losses.ce import CELoss
from kdforge.models import (
    build_model,
    copy_matching_weights,
    count_params,
    load_saved_model,
    load_state_into,
    save_model,
)
from kdforge.models.ensemble import EnsembleTeacher
from kdforge.recipe import FROM_TEACHER, ModelSpec, Recipe, TeacherSpec, TrainConfig, dump_recipe
from kdforge.registry import LOSSES
from kdforge.report import write_report
from kdforge.train.loop import TrainJob, TrainSummary, fit, steps_for
from kdforge.train.module import DistillModule, OnlineTeacher, TeacherSource

logger = logging.getLogger("kdforge")

RUN_MARKER = "recipe.resolved.yaml"


@dataclass
class ModelResult:
    """A trained model, where it was saved, and its test metrics."""

    model: nn.Module
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    out_dir: Path
    report: dict[str, Any]
    teacher: nn.Module
    students: dict[int, ModelResult]
    scratch: dict[int, ModelResult]


def prepare_run_dir(out_dir: Path, recipe: Recipe, resume: bool, overwrite: bool) -> None:
    """Refuse to mix runs: an existing run folder needs --resume (same recipe) or --overwrite.

    With several processes (torchrun, accelerate launch) every process checks the folder as it was, then only
    the main process changes it; an error there reaches every process, so none waits for the others forever.
    """
    state = process_state()
    _check_run_dir(out_dir, recipe, resume, overwrite)
    state.wait_for_everyone()
    message = [None]
    if state.is_main_process:
        try:
            _make_run_dir(out_dir, recipe, overwrite)
        except KDForgeError as exc:
            message[0] = str(exc)
    if state.num_processes > 1:
        torch.distributed.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise KDForgeError(message[0])


def _make_run_dir(out_dir: Path, recipe: Recipe, overwrite: bool) -> None:
    try:
        if overwrite and out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        io.remove_stale_temps(out_dir, recursive=True)  # what a killed run left half-written
        io.write_text(out_dir / RUN_MARKER, dump_recipe(recipe))
    except OSError as exc:
        raise io.os_error(exc, out_dir) from None


def _check_run_dir(out_dir: Path, recipe: Recipe, resume: bool, overwrite: bool) -> None:
    marker = out_dir / RUN_MARKER
    if marker.is_file():
        if overwrite:
            return
        elif resume:
            if marker.read_text() != dump_recipe(recipe):
                raise KDForgeError(
                    f"--resume: {str(out_dir)!r} holds a run of a different recipe. "
                    "Resume with the same recipe and overrides, or choose another --out."
                )
        else:
            raise KDForgeError(
                f"output dir {str(out_dir)!r} already holds a run. Pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out."
            )
    elif out_dir.exists() and not out_dir.is_dir():
        raise KDForgeError(f"output dir {str(out_dir)!r} is a file, not a folder. Choose another --out.")
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise KDForgeError(
            f"output dir {str(out_dir)!r} exists and is not empty (and is not a kdforge run). "
            "Choose another --out, or pass --overwrite to replace it."
        )


def environment() -> dict[str, Any]:
    import accelerate
    import numpy
    import sklearn

    from kdforge import __version__

    return {
        "kdforge": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "accelerate": accelerate.__version__, "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__, "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(), "world_size": process_state().num_processes,
    }


def _model_from_spec(spec: ModelSpec, recipe: Recipe, data: DataBundle, where: str,
                     teacher: nn.Module | None = None) -> tuple[nn.Module, str, dict]:
    """The model a spec names, with the spec and args that rebuild it (`teacher`: for `from_teacher` only)."""
    if spec.model == FROM_TEACHER:
        return _student_from_teacher(teacher, spec.args, where)
    if spec.path is not None:
        model, meta = load_saved_model(recipe.resolve_path(spec.path), where, recipe._base_dir)
        return model, meta["model"], meta["args"]
    model, args = build_model(spec.model, spec.args, data.info, where, recipe._base_dir)
    if spec.checkpoint is not None:
        from kdforge.io import load_weights_file

        path = recipe.resolve_path(spec.checkpoint)
        load_state_into(model, load_weights_file(path, f"{where}.checkpoint"), f"{where}.checkpoint")
    return model, spec.model, args


def obtain_teacher(recipe: Recipe, data: DataBundle, out_dir: Path, resume: bool,
                   build_cache: bool = True) -> nn.Module:
    """Load the teacher, train it first (cross-entropy on all labelled training data), or assemble an
    ensemble of such teachers, as the recipe says.

    With `teacher.cache`, the teacher's outputs are stored once (or an existing store is checked against it);
    a recipe that gives only the cache gets the store's replay of val/test outputs (docs/cache.md).
    """
    spec = recipe.teacher
    if spec.cache is not None and spec.model is None and spec.path is None and spec.members is None:
        from kdforge.cache.build import replay_teacher

        return replay_teacher(recipe, data)
    teacher = _obtain(spec, recipe, data, out_dir / "teacher", resume, "recipe.teacher")
    if spec.cache is not None and build_cache:
        from kdforge.cache.build import ensure_cache

        ensure_cache(recipe, data, teacher)
    return teacher


def _obtain(spec: TeacherSpec, recipe: Recipe, data: DataBundle, folder: Path, resume: bool,
            where: str) -> nn.Module:
    if spec.members is not None:
        members = [_obtain(member, recipe, data, folder / f"member-{i}", resume, f"{where}.members[{i}]")
                   for i, member in enumerate(spec.members)]
        return EnsembleTeacher(members, spec.member_weights)
    if spec.online:  # mutual learning: the peer starts from its factory's (or checkpoint's) weights
        seed_everything(0)
        teacher, _, _ = _model_from_spec(spec, recipe, data, where)
        return teacher
    if spec.train is None:
        # builtin: architectures start from random weights; hf:, hf_student: and py: factories may load their own
        # (a pretrained encoder such as kdforge.models.minilm:minilm_teacher), so they count as having weights.
        if spec.path is None and spec.checkpoint is None and (spec.model or "").startswith("builtin:"):
            raise RecipeError(
                f"{where}: the teacher has no weights. Give 'checkpoint' (weights for 'model'), "
                "'path' (a saved kdforge model), or 'train' (train it first on the labelled data)."
            )
        teacher, _, _ = _model_from_spec(spec, recipe, data, where)
        return teacher
    if resume and (folder / "model.json").is_file():
        teacher, _ = load_saved_model(folder, where, recipe._base_dir)
        return teacher
    seed_everything(spec.train.seed)
    teacher, model_spec, args = _model_from_spec(spec, recipe, data, where)
    plain_training(teacher, spec.inputs, data, spec.train, data.teacher_train, folder, recipe, resume,
                   folder.name if folder.name != "teacher" else "teacher")
    save_model(teacher, folder, model_spec, args, spec.inputs)
    return teacher


def plain_training(model: nn.Module, inputs: list[str], data: DataBundle, cfg: TrainConfig, train_data,
                   folder: Path, recipe: Recipe, resume: bool, name: str, total_steps: int | None = None) -> None:
    """Cross-entropy training (teacher first, scratch baseline): the same loop with one `ce` term, no teacher."""
    module = DistillModule(model, WeightedSum({"ce": CELoss()}, {"ce": 1.0}), inputs)
    validate = validator(data.val, inputs, None, recipe.eval.batch_size) if data.val is not None else None
    cfg = cfg if validate is not None else cfg.model_copy(update={"select": "last", "patience": None})
    preflight(module, None, train_data, (set(), set()))
    job = TrainJob(name, module, None, train_data, cfg, total_steps or steps_for(cfg, len(train_data)), folder,
                   validate)
    save_summary(fit(job, make_accelerator(cfg.mixed_precision), resume=resume), folder)


def save_summary(summary: TrainSummary, folder: Path) -> None:
    """train_summary.json (steps, best step, early stop, time) and, when the best evaluation was kept, the
    last step's student as last.safetensors, so the report can show best-epoch and last-epoch figures."""
    io.write_json(folder / "train_summary.json", {
        "steps": summary.steps, "best_step": summary.best_step, "stopped_early": summary.stopped_early,
        "seconds": summary.seconds, "nonfinite_skipped": summary.nonfinite_skipped,
    })
    if summary.last_weights is not None:
        student = {k.removeprefix("student."): v for k, v in summary.last_weights.items() if k.startswith("student.")}
        io.save_tensors(folder / "last.safetensors", student)


def make_teacher_source(recipe: Recipe, teacher: nn.Module, data: DataBundle | None = None) -> TeacherSource:
    """What the student's loss reads teacher outputs from during training: the store when the recipe names
    `teacher.cache` (checked against this teacher, and `data` when given), else the teacher run online."""
    if recipe.teacher.cache is not None:
        from kdforge.cache.build import cached_teacher

        return cached_teacher(recipe, teacher, data)
    return OnlineTeacher(teacher, recipe.teacher.inputs, recipe.taps.teacher)


def distill_student(recipe: Recipe, seed: int, data: DataBundle, teacher: nn.Module,
                    teacher_val_logits: torch.Tensor | None, folder: Path, resume: bool) -> nn.Module:
    """Build the student for `seed`, check the setup on one batch, and train it against the teacher.

    With `teacher.online`, `teacher` is the peer's starting point: a copy is trained together with the
    student (deep mutual learning) and saved beside it as `peer/`.
    """
    cfg = recipe.train.model_copy(update={"seed": seed})
    # generation g > 1 is taught by generation g-1, but `from_teacher` still copies the recipe's teacher
    student, model_spec, args = build_student(recipe, seed, data, folder.parent.parent, resume,
                                              teacher if recipe.generations == 1 else None)
    loss = build_loss(recipe.losses)
    if recipe.teacher.online and any(loss.required_taps()):
        raise RecipeError(
            "recipe.losses: mutual learning (teacher.online) applies every term in both directions, so only "
            "logit-level losses (kd, logit_mse, dkd, ...) fit; remove the feature terms or use a trained teacher."
        )
    peer = copy.deepcopy(teacher).train().requires_grad_(True) if recipe.teacher.online else None
    if peer is not None:
        teacher_val_logits = None  # the peer changes as it learns: no fixed teacher to agree with
    module = DistillModule(student, loss, recipe.student.inputs, recipe.taps.student, peer=peer,
                           peer_inputs=recipe.teacher.inputs)
    online = make_teacher_source(recipe, teacher) if loss.needs_teacher and peer is None else None
    shapes = preflight(module, online, data.student_train,
                       (set(recipe.taps.student), set(recipe.taps.teacher)))
    if shapes:
        logger.info("captured shapes: %s", shapes)
    validate = None
    if data.val is not None:
        validate = validator(data.val, recipe.student.inputs, teacher_val_logits, recipe.eval.batch_size)
    else:
        cfg = cfg.model_copy(update={"select": "last", "patience": None})
    job = TrainJob(f"student seed {seed}", module, online, data.student_train, cfg,
                   steps_for(cfg, len(data.student_train)), folder, validate)
    steps = [LOSSES.meta(term.name)["step"] for term in recipe.losses if "step" in LOSSES.meta(term.name)]
    if steps:  # a method that changes the step itself (GKD's on-policy rollouts) registers it with its loss
        job.step_fn = steps[0]
    save_summary(fit(job, make_accelerator(cfg.mixed_precision), resume=resume), folder)
    save_model(student, folder, model_spec, args, recipe.student.inputs)
    if peer is not None:
        _, peer_spec, peer_args = _model_from_spec(recipe.teacher, recipe, data, "recipe.teacher")
        save_model(peer, folder.parent / "peer", peer_spec, peer_args, recipe.teacher.inputs)
    save_method_state(module, recipe, data, folder, peer if peer is not None else teacher)
    if online is not None:
        online.close()
    module.capture.remove()
    return student


def save_method_state(module: DistillModule, recipe: Recipe, data: DataBundle, folder: Path,
                      teacher: nn.Module | None) -> None:
    """Keep what the loss terms learned (projectors, exit heads) as `loss_state.safetensors`, and run the
    measurements a method registers (`evaluate=` in its registry entry: the early-exit curve, DistillSpec's
    acceptance rate; called with the loss term, the student, the teacher model or None, the test split, the
    student's inputs and taps) on the
    test split into `method_metrics.json`."""
    state = module.loss.state_dict()
    if state:
        io.save_tensors(folder / "loss_state.safetensors", state)
    measured = {}
    for name, term in module.loss.terms.items():
        evaluate = LOSSES.meta(name).get("evaluate")
        if evaluate is not None:
            result = evaluate(term, module.student, teacher, data.test, recipe.student.inputs, recipe.taps.student)
            if result is not None:
                measured[name] = result
    if measured:
        io.write_json(folder / "method_metrics.json", measured)


def train_scratch(recipe: Recipe, seed: int, data: DataBundle, folder: Path, resume: bool,
                  teacher: nn.Module | None = None) -> nn.Module:
    """The same student, same seed (same initial weights), same optimizer steps and batch size, trained with
    cross-entropy on the labelled samples only: the baseline a distilled student must beat."""
    cfg = recipe.train.model_copy(update={"seed": seed})
    student, model_spec, args = build_student(recipe, seed, data, folder.parent.parent, resume, teacher)
    total_steps = steps_for(cfg, len(data.student_train))
    plain_training(student, recipe.student.inputs, data, cfg, data.scratch_train, folder, recipe, resume,
                   f"scratch seed {seed}", total_steps)
    save_model(student, folder, model_spec, args, recipe.student.inputs)
    return student


def build_student(recipe: Recipe, seed: int, data: DataBundle, run_dir: Path, resume: bool,
                  teacher: nn.Module | None = None) -> tuple[nn.Module, str, dict]:
    """The student for `seed` at its starting weights, with the spec and args that rebuild it.

    The distilled student and its scratch twin both start here, so for a seed they start from the same weights
    (the fair comparison): the factory's seeded initialisation; with `model: from_teacher`, the recipe teacher's
    chosen layers (`teacher`, or reloaded from the run when None); with `pretrain:`, the factory's initialisation
    overwritten by every matching tensor of the model pre-trained once per run in `<run>/pretrain/`. What was done is
    written to `<run>/student_init.json` for the report.
    """
    spec = recipe.student
    if spec.model == FROM_TEACHER and teacher is None:
        teacher = _obtain(recipe.teacher, recipe, data, run_dir / "teacher", True, "recipe.teacher")
    pretrained, pretrain_metrics = (None, None) if spec.pretrain is None else _pretrained(recipe, run_dir, resume)
    seed_everything(seed)  # after any loading or pre-training, so the seed alone fixes the rest
    student, model_spec, args = _model_from_spec(spec, recipe, data, "recipe.student", teacher)
    if pretrained is not None:
        copied = copy_matching_weights(pretrained.state_dict(), student)
        if not copied.names:
            raise RecipeError(
                f"recipe.student.pretrain.model: no tensor of the pre-trained {type(pretrained).__name__} matches "
                f"the student's {type(student).__name__} by name and shape, so pre-training would change nothing. "
                "Use the student's architecture with a pre-training head (BertForMaskedLM for a "
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


def _student_from_teacher(teacher: nn.Module | None, args: dict[str, Any], where: str) -> tuple[nn.Module, str, dict]:
    """`student.model: from_teacher`: `student_from_teacher(teacher, **args)`, saved as `hf_config:` (class and
    config) so the saved student rebuilds from its own folder, without the teacher."""
    from kdforge.models.hf import config_spec
    from kdforge.models.hf_student import student_from_teacher

    if teacher is None:
        raise KDForgeError(f"{where}.model: '{FROM_TEACHER}' needs the recipe's teacher; build it after the teacher.")
    try:
        student = student_from_teacher(teacher, **args)
    except TypeError as exc:
        raise RecipeError(f"{where}.args: {FROM_TEACHER} does not accept these arguments ({exc}). It takes "
                          "student_from_teacher's keywords, e.g. layers: every_other.") from None
    except RecipeError:
        raise
    except KDForgeError as exc:
        raise RecipeError(f"{where}.model: '{FROM_TEACHER}' needs a transformers teacher ({exc}); give the "
                          "student its own model instead.") from None
    except ValueError as exc:
        raise RecipeError(f"{where}.args: {exc}") from None
    model_spec, saved_args = config_spec(student)
    return student, model_spec, saved_args


def _pretrained(recipe: Recipe, run_dir: Path, resume: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The `student.pretrain` model, trained with cross-entropy on its own data once per run, at its own fixed
    `train.seed` (Turc et al. 2019 pre-train each compact model once; the seeds then vary the task stage, and
    pre-training is the expensive stage). The first student that needs it trains it (resumable from its
    checkpoints with --resume); the others, and a resumed run, load `<run>/pretrain/`, which a run folder holds
    only from this run (kdforge refuses to reuse a folder without --resume)."""
    spec = recipe.student.pretrain
    folder, where = run_dir / "pretrain", "recipe.student.pretrain"
    if (folder / "model.json").is_file():
        return load_saved_model(folder, where, recipe._base_dir)[0], json.loads(
            (folder / "pretrain_metrics.json").read_text())
    data = load_data(spec.data, recipe._base_dir)
    seed_everything(spec.train.seed)
    model, model_spec, args = _model_from_spec(spec, recipe, data, where)
    plain_training(model, spec.inputs, data, spec.train, data.teacher_train, folder, recipe, resume, "pretrain")
    metrics = _pretrain_metrics(model, spec.inputs, data, folder, recipe)
    logger.info("pre-trained the student's initialisation: %s", metrics)
    io.write_json(folder / "pretrain_metrics.json", metrics)  # before model.json, which marks the stage complete
    save_model(model, folder, model_spec, args, spec.inputs)
    return model, metrics


@torch.no_grad()
def _pretrain_metrics(model: nn.Module, inputs: list[str], data: DataBundle, folder: Path,
                      recipe: Recipe) -> dict[str, Any]:
    """Steps, first and last training loss, and the validation loss and accuracy over labelled positions (the
    masked tokens of masked-LM rows) when the pre-training data has a val split."""
    from kdforge.data import sequential_batches
    from kdforge.metrics.task import accuracy, token_nll
    from kdforge.models.forward import call_model, logits_of

    log = [row for row in load_log(folder / "log.jsonl") if "train/loss" in row]
    summary = json.loads((folder / "train_summary.json").read_text())
    metrics: dict[str, Any] = {"source": recipe.student.pretrain.data.source, "steps": summary["steps"],
                               "params": count_params(model), "seconds": summary["seconds"]}
    if log:
        metrics.update(first_loss=log[0]["train/loss"], last_loss=log[-1]["train/loss"])
    if data.val is not None:
        was_training = model.training
        model.eval()
        nll, correct, counted = 0.0, 0, 0
        device = next(model.parameters()).device
        for batch in sequential_batches(data.val, recipe.eval.batch_size):
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = logits_of(call_model(model, batch, inputs)).float().cpu()
            batch = {k: v.cpu() for k, v in batch.items()}
            batch_nll, _ = token_nll(batch["labels"], logits)
            batch_correct, batch_counted = accuracy(batch["labels"], logits)
            nll, correct, counted = nll + batch_nll, correct + batch_correct, counted + batch_counted
        model.train(was_training)
        if counted:
            metrics.update(val_loss=nll / counted, val_accuracy=correct / counted, val_positions=counted)
    return metrics


def save_tokenizer(data: DataBundle, out: Path) -> None:
    """`<run>/tokenizer.json`: the tokenizer a text source made the ids with (an in-process WordPiece included),
    so the saved student can read new text exactly as it was trained."""
    text = data.tokenizer.to_json() if data.tokenizer is not None else None
    if text is None:
        if data.tokenizer is not None:
            logger.info("the tokenizer is a slow (Python) tokenizer; tokenizer.json is not written")
        return
    if io.is_writer():
        io.write_text(out / "tokenizer.json", text)


def _load_or(folder: Path, resume: bool, train) -> nn.Module:
    if resume and (folder / "model.json").is_file():
        return load_saved_model(folder, str(folder))[0]
    return train()


def run_recipe(recipe: Recipe, out_dir: str | Path | None = None, resume: bool = False,
               overwrite: bool = False) -> RunResult:
    """Everything `kdforge distill` does, from Python."""
    out = Path(out_dir or recipe.output_dir or f"runs/{recipe.name}")
    recipe.check()
    prepare_run_dir(out, recipe, resume, overwrite)
    io.write_json(out / "environment.json", environment())
    started = time.perf_counter()
    data = load_data(recipe.data, recipe._base_dir)
    save_tokenizer(data, out)
    label_free = is_label_free(data.test)
    if label_free:
        check_label_free(recipe, data)
    teacher = obtain_teacher(recipe, data, out, resume)
    teacher_seconds = time.perf_counter() - started
    confidence = recipe.eval.confidence
    inputs_t = recipe.teacher.inputs
    teacher_val = predict_logits(teacher, data.val, inputs_t) if data.val is not None else None
    teacher_test = predict_logits(teacher, data.test, inputs_t)
    labels = None if label_free else data.test.tensors["labels"]
    students: dict[int, ModelResult] = {}
    scratch: dict[int, ModelResult] = {}
    report_teacher = teacher
    for seed in recipe.seeds:
        seed_dir = out / f"seed-{seed}"
        t0 = time.perf_counter()
        student, generation_accuracy = _distill_generations(recipe, seed, data, teacher, teacher_val, seed_dir,
                                                            resume)
        if recipe.teacher.online:  # each student is compared with the peer it learned with
            peer = load_saved_model(seed_dir / "peer", "peer")[0]
            seed_teacher_test = predict_logits(peer, data.test, inputs_t)
            if seed == recipe.seeds[0]:
                report_teacher, teacher_test = peer, seed_teacher_test
        else:
            seed_teacher_test = teacher_test
        students[seed] = _test_result(student, seed_dir / "student", recipe.student.inputs, data, labels,
                                      seed_teacher_test, confidence, time.perf_counter() - t0)
        if generation_accuracy:
            students[seed].metrics["generation_accuracy"] = generation_accuracy
        if recipe.baseline:
            t0 = time.perf_counter()
            model = _load_or(seed_dir / "scratch", resume, lambda seed=seed, d=seed_dir: train_scratch(
                recipe, seed, data, d / "scratch", resume, teacher))  # from_teacher copies it: no reload
            scratch[seed] = _test_result(model, seed_dir / "scratch", recipe.student.inputs, data, labels,
                                         seed_teacher_test, confidence, time.perf_counter() - t0)
    teacher = report_teacher
    quality = {"dim": teacher_test.shape[1]} if labels is None else accuracy_summary(labels, teacher_test, confidence)
    teacher_metrics = {**quality, "params": count_params(teacher), "seconds": teacher_seconds}
    report = write_report(out, recipe, data, teacher_metrics, students, scratch, environment(), teacher_model=teacher)
    return RunResult(out, report, teacher, students, scratch)


def _distill_generations(recipe: Recipe, seed: int, data: DataBundle, teacher: nn.Module,
                         teacher_val: torch.Tensor | None, seed_dir: Path, resume: bool) -> tuple[nn.Module, list]:
    """The student for `seed`; with `generations: N` (born-again networks), generation g > 1 is taught by
    generation g-1, and the test accuracy of every generation is returned beside the last one."""
    student, generation_accuracy = teacher, []
    for generation in range(1, recipe.generations + 1):
        if generation > 1:
            teacher = student
            teacher_val = predict_logits(student, data.val, recipe.student.inputs) if data.val is not None else None
        folder = seed_dir / ("student" if generation == recipe.generations else f"generation-{generation}")
        student = _load_or(folder, resume, lambda t=teacher, v=teacher_val, f=folder: distill_student(
            recipe, seed, data, t, v, f, resume))
        if recipe.generations > 1 and not is_label_free(data.test):
            logits = predict_logits(student, data.test, recipe.student.inputs)
            generation_accuracy.append(accuracy_summary(data.test.tensors["labels"], logits, 0.95)["accuracy"])
    return student, generation_accuracy


def check_label_free(recipe: Recipe, data: DataBundle) -> None:
    """Before anything trains on data without labels (sentence embeddings): refuse what needs labels.

    The scratch baseline is refused rather than skipped: it is on by default, and a report that silently lacks the
    baseline a classification run would have is worse than one line in the recipe.
    """
    hint = "this data has no labels (embedding distillation judges the student against the teacher only)"
    if recipe.baseline:
        raise RecipeError(f"recipe.baseline: {hint}, so the scratch baseline (the student trained with `ce` on "
                          "labels) cannot train. Set `baseline: false`.")
    if recipe.teacher.train is not None or any(m.train is not None for m in recipe.teacher.members or []):
        raise RecipeError(f"recipe.teacher.train: {hint}, so the teacher cannot be trained here with cross-entropy. "
                          "Give it weights (checkpoint, path, or a factory that loads them) and remove 'train'.")
    for i, term in enumerate(recipe.losses):
        if term.name == "ce":
            raise RecipeError(f"recipe.losses[{i}]: `ce` needs labels and {hint}. Remove it; use `embed_mse`.")
    if data.val is not None and recipe.train.monitor != "val/cosine":
        raise RecipeError(f"recipe.train.monitor: {recipe.train.monitor!r} is not measured because {hint}. Set "
                          "`monitor: val/cosine` (mean cosine to the teacher on the validation split, maximised), "
                          "or `data.val_size: 0` to train without validation.")


def _test_result(model: nn.Module, folder: Path, inputs: list[str], data: DataBundle, labels: torch.Tensor | None,
                 teacher_test: torch.Tensor, confidence: float, seconds: float) -> ModelResult:
    """Test metrics of a trained model (`test_metrics.json`): accuracy and agreement, or on label-free data the
    embedding fidelity (cosine to the teacher, MSE, Spearman of pairwise similarities)."""
    if labels is None:
        return _embedding_test_result(model, folder, inputs, data, teacher_test, seconds)
    logits = predict_logits(model, data.test, inputs)
    flat = positions(data.test)  # token tasks: accuracy and agreement count the same positions
    metrics = {**accuracy_summary(labels, logits, confidence),
               **agreement_summary(flat(teacher_test), flat(logits), confidence),
               "params": count_params(model), "wall_seconds": seconds, **_train_summary(folder)}
    last = _last_step_model(model, folder)
    if last is not None:  # `select: best` kept an earlier step: report the last step's figures beside it
        last_logits = predict_logits(last, data.test, inputs)
        metrics["accuracy_last"] = accuracy_summary(labels, last_logits, confidence)["accuracy"]
        metrics["agreement_last"] = agreement_summary(flat(teacher_test), flat(last_logits), confidence)["agreement"]
    io.write_json(folder / "test_metrics.json", metrics)
    return ModelResult(model, folder, metrics)


def _embedding_test_result(model: nn.Module, folder: Path, inputs: list[str], data: DataBundle,
                           teacher_test: torch.Tensor, seconds: float) -> ModelResult:
    from kdforge.metrics.embedding import embedding_fidelity

    metrics = {**embedding_fidelity(teacher_test, predict_logits(model, data.test, inputs)),
               "params": count_params(model), "wall_seconds": seconds, **_train_summary(folder)}
    last = _last_step_model(model, folder)
    if last is not None:  # `select: best` kept an earlier step: report the last step's figures beside it
        last_fidelity = embedding_fidelity(teacher_test, predict_logits(last, data.test, inputs))
        metrics.update(cosine_last=last_fidelity["cosine"], spearman_last=last_fidelity["spearman"])
    io.write_json(folder / "test_metrics.json", metrics)
    return ModelResult(model, folder, metrics)


def _last_step_model(model: nn.Module, folder: Path) -> nn.Module | None:
    """A copy of `model` with the last step's weights, when `select: best` saved them beside the best ones."""
    last_file = folder / "last.safetensors"
    if not last_file.is_file():
        return None
    last = copy.deepcopy(model)
    load_state_into(last, io.load_weights_file(last_file, str(last_file)), str(last_file))
    return last


def _train_summary(folder: Path) -> dict[str, Any]:
    summary_file = folder / "train_summary.json"
    if not summary_file.is_file():
        return {}
    summary = json.loads(summary_file.read_text())
    return {"steps": summary["steps"], "best_step": summary["best_step"], "train_seconds": summary["seconds"]}


def load_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
