"""The teacher of a run: loaded, trained first with cross-entropy, assembled into an ensemble, or (mutual
learning) the peer's starting point; with `teacher.cache`, its outputs stored once (`app.cache` opens the store)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from kdforge.app.build import plain_training
from kdforge.app.cache import CacheInfo, ensure_cache, replay_teacher
from kdforge.app.data import load_recipe_data
from kdforge.app.given import NOTHING, Given
from kdforge.data import DataBundle
from kdforge.errors import KDForgeError, RecipeError
from kdforge.imports import py_refs, vouch
from kdforge.io import load_weights_file
from kdforge.llm.served import SERVED_PREFIX, ServedTeacher, served_teacher
from kdforge.lm.cross_data import is_paired, teacher_view
from kdforge.models import build_model, load_saved_model, load_state_into, load_weights, object_spec, save_model
from kdforge.models.ensemble import EnsembleTeacher
from kdforge.models.hf import config_spec
from kdforge.models.hf_student import student_from_teacher
from kdforge.processes import seed_everything
from kdforge.recipe import FROM_TEACHER, ModelSpec, Recipe, TeacherSpec


def model_from_spec(spec: ModelSpec, recipe: Recipe, data: DataBundle, where: str,
                    teacher: nn.Module | None = None) -> tuple[nn.Module, str, dict]:
    """The model a spec names, with the spec and args that rebuild it (`teacher`: for `from_teacher` only)."""
    if spec.model == FROM_TEACHER:
        return _student_from_teacher(teacher, spec.args, where)
    if spec.path is not None:
        model, meta = load_saved_model(recipe.resolve_path(spec.path), where, recipe.base_dir)
        return model, meta["model"], meta["args"]
    if isinstance(spec, TeacherSpec) and spec.model.startswith(SERVED_PREFIX):  # behind a server: builds the cache
        url = spec.model.removeprefix(SERVED_PREFIX)
        tokenizer = getattr(getattr(data, "tokenizer", None), "backend", None)  # checked against the server's
        return served_teacher(url, spec.args, f"{where}.args", tokenizer), spec.model, spec.args
    model, args = build_model(spec.model, spec.args, data.info, where, recipe.base_dir)
    if spec.checkpoint is not None:
        path = recipe.resolve_path(spec.checkpoint)
        load_state_into(model, load_weights_file(path, f"{where}.checkpoint"), f"{where}.checkpoint")
    return model, spec.model, args


def obtain_teacher(recipe: Recipe, data: DataBundle, out_dir: Path, resume: bool, given: Given = NOTHING,
                   shard: bool = False) -> nn.Module:
    """Load the teacher, train it first (cross-entropy on all labelled training data), or assemble an ensemble of
    such teachers, as the recipe says; a teacher given as a Python object is used (and trained) in place.

    `shard`: under an FSDP launch on several processes, a teacher that is loaded (not trained) is built whole on
    process 0 only and sharded at once (`_sharded_from_rank0`); without it, every process builds it whole."""
    return _obtain(recipe.teacher, recipe, data, out_dir / "teacher", resume, "recipe.teacher", given, shard)


def _obtain(spec: TeacherSpec, recipe: Recipe, data: DataBundle, folder: Path, resume: bool, where: str,
            given: Given = NOTHING, shard: bool = False) -> nn.Module:
    if spec.members is not None:
        members = [_obtain(member, recipe, data, folder / f"member-{i}", resume, f"{where}.members[{i}]")
                   for i, member in enumerate(spec.members)]
        return EnsembleTeacher(members, spec.member_weights)
    if spec.online:  # mutual learning: the peer starts from its factory's (or checkpoint's) weights
        seed_everything(0)
        return given.teacher if given.teacher is not None else model_from_spec(spec, recipe, data, where)[0]
    if spec.train is None:
        if given.teacher is not None:
            return given.teacher
        # builtin: architectures start from random weights; hf:, hf_student: and py: factories may load their own
        # (a pretrained encoder such as kdforge.models.minilm:minilm_teacher), so they count as having weights.
        if spec.path is None and spec.checkpoint is None and (spec.model or "").startswith("builtin:"):
            raise RecipeError(
                f"{where}: the teacher has no weights. Give 'checkpoint' (weights for 'model'), "
                "'path' (a saved kdforge model), or 'train' (train it first on the labelled data)."
            )
        plan = _rank0_plan(spec, recipe, where) if shard else None
        if plan is not None:
            return _sharded_from_rank0(spec, recipe, data, where, *plan)
        return model_from_spec(spec, recipe, data, where)[0]
    if resume and (folder / "model.json").is_file():
        if given.teacher is not None:
            return load_weights(given.teacher, folder, where)
        return load_saved_model(folder, where, recipe.base_dir)[0]
    seed_everything(spec.train.seed)
    if given.teacher is not None:
        teacher, model_spec, args = given.teacher, object_spec(given.teacher), {}
    else:
        teacher, model_spec, args = model_from_spec(spec, recipe, data, where)
    inputs, own = spec.inputs, data
    if isinstance(spec.inputs, dict) and is_paired(data.teacher_train):  # cross-tokenizer rows: its own tokens
        inputs, own = list(spec.inputs), _teacher_rows(data)
    plain_training(teacher, inputs, own, spec.train, own.teacher_train, folder, recipe.eval.batch_size,
                   resume, folder.name if folder.name != "teacher" else "teacher")
    save_model(teacher, folder, model_spec, args, spec.inputs)
    return teacher


def _rank0_plan(spec: TeacherSpec, recipe: Recipe, where: str) -> tuple[Any, Any] | None:
    """(sharding plan, device) when this launch builds the loaded teacher on process 0 only: FSDP2 on several
    processes, and nothing that needs the whole teacher on every process; None (every process builds it whole,
    sharded later by the loop) otherwise, with a log line saying why where FSDP was asked for."""
    import logging
    import os

    from kdforge.processes import make_accelerator
    from kdforge.train.sharding import requested_plan

    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").strip().lower() in ("1", "true", "yes")
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or not fsdp:  # one process, DDP: as before, no accelerator yet
        return None
    accelerator = make_accelerator(recipe.train.mixed_precision)
    plan = requested_plan(accelerator, "recipe.train")
    if plan is None or accelerator.num_processes < 2:
        return None
    reason = ("teacher.cache: the cache is built from the whole teacher" if spec.cache is not None else
              f"student.model: {FROM_TEACHER} copies the teacher's weights" if recipe.student.model == FROM_TEACHER
              else "teacher.path: a saved kdforge model folder is loaded whole" if spec.path is not None else None)
    if reason is not None:
        logging.getLogger("kdforge").info("%s: built whole on every process under FSDP (%s)", where, reason)
        return None
    return plan, accelerator.device


def _sharded_from_rank0(spec: TeacherSpec, recipe: Recipe, data: DataBundle, where: str, plan: Any,
                        device: Any) -> nn.Module:
    """The teacher built whole on process 0 and as its structure alone (meta device) on the others, then sharded
    with every shard filled from process 0. A factory that cannot build on the meta device is built whole on that
    process instead (a log line says so); process 0's weights are used either way."""
    import logging

    from kdforge.errors import one_line
    from kdforge.models.hf import hf_structure
    from kdforge.train.sharding import meta_unless_rank0, shard_frozen_from_rank0

    log, model, reason = logging.getLogger("kdforge"), None, ""
    with meta_unless_rank0() as on_meta:
        if not on_meta:
            model = model_from_spec(spec, recipe, data, where)[0]
        else:
            try:  # the structure only: no checkpoint, no weights read
                model = (hf_structure(spec.model.removeprefix("hf:"), spec.args, where, recipe.base_dir)
                         if (spec.model or "").startswith("hf:") else
                         build_model(spec.model, spec.args, data.info, where, recipe.base_dir)[0])
            except Exception as exc:  # noqa: BLE001 - any failure on the meta device: the whole build below
                reason = one_line(exc)
    if model is None:
        log.warning("%s: cannot be built on the meta device (%s); this process builds it whole, and process 0's "
                    "weights replace them after sharding", where, reason)
        model = model_from_spec(spec, recipe, data, where)[0]
    elif on_meta and any(not p.is_meta for p in model.parameters()):
        log.warning("%s: its factory built weights in spite of the meta device; process 0's replace them after "
                    "sharding", where)
    elif on_meta:
        log.info("%s: built on the meta device; its shards are filled from process 0", where)
    return shard_frozen_from_rank0(model, plan, device, where)


def _teacher_rows(data: DataBundle) -> DataBundle:
    """Paired cross-tokenizer data as the teacher trains on it: its own ids, labels and mask under the plain names,
    for the rows `plain_training` reads (its training rows and the validation split)."""
    return dataclasses.replace(data, teacher_train=teacher_view(data.teacher_train),
                               val=None if data.val is None else teacher_view(data.val))


def _student_from_teacher(teacher: nn.Module | None, args: dict[str, Any], where: str) -> tuple[nn.Module, str, dict]:
    """`student.model: from_teacher`: `student_from_teacher(teacher, **args)`, saved as `hf_config:` (class and
    config) so the saved student rebuilds from its own folder, without the teacher."""
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


def cache_recipe(recipe: Recipe, directory: str | Path | None = None, overwrite: bool = False) -> CacheInfo:
    """`kdforge cache`: load the recipe's data and teacher, and store the teacher's outputs once.

    The teacher must already have weights (`checkpoint:` or `path:`); a recipe whose teacher is trained
    first (`train:`) builds its cache inside `kdforge distill`, right after training the teacher.
    """
    recipe.check()
    spec = recipe.teacher
    if spec.train is not None:
        raise RecipeError("recipe.teacher.train: `kdforge cache` runs a teacher that already has weights. Run "
                          "`kdforge distill` (it trains the teacher, then builds the cache once), or save the "
                          "teacher and give its folder as teacher.path.")
    if spec.model is None and spec.path is None and spec.members is None:
        raise RecipeError("recipe.teacher: building a cache needs the teacher model; give model + checkpoint, "
                          "or path, beside cache.")
    with vouch(py_refs(recipe.model_dump(mode="json"))):  # the recipe the user runs names its own code
        data = load_recipe_data(recipe.data, recipe.base_dir)
        teacher = obtain_teacher(recipe, data, Path("."), resume=False)
        return ensure_cache(recipe, data, teacher, directory, overwrite, repair=True)


def run_teacher(recipe: Recipe, data: DataBundle, out_dir: Path, resume: bool, given: Given = NOTHING) -> nn.Module:
    """The teacher a run evaluates against, with its cache in place: with `teacher.cache`, the teacher's outputs
    are stored once (or an existing store is checked against it); a recipe that gives only the cache gets the
    store's replay of val/test outputs (docs/cache.md)."""
    spec = recipe.teacher
    if spec.cache is not None and spec.model is None and spec.path is None and spec.members is None:
        return replay_teacher(recipe, data)
    teacher = obtain_teacher(recipe, data, out_dir, resume, given, shard=True)
    if spec.cache is not None:
        ensure_cache(recipe, data, teacher)
        if isinstance(teacher, ServedTeacher):  # it answers over HTTP: evaluation reads its stored val/test outputs
            return replay_teacher(recipe, data)
    return teacher
