"""The preflight check: one small batch through teacher, student and loss before the first optimizer step, so
every mistake a recipe (or a Python call) can make shows up as one line before any training time is spent."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping

import torch

from kdforge.cache.teacher import CachedTeacher
from kdforge.data import DataBundle
from kdforge.data.tensors import PaddedRows
from kdforge.errors import KDForgeError, RecipeError, ShapeMismatchError
from kdforge.llm.positions import check_alignment
from kdforge.llm.vocab import check_vocabularies
from kdforge.lm.cross_data import TEACHER_KEYS, is_paired
from kdforge.losses.fused_linear import fused_refusal
from kdforge.losses.sparse import topk_refusal
from kdforge.models.forward import call_model, logits_of
from kdforge.recipe import Recipe
from kdforge.train.module import DistillModule, OnlineTeacher, standard_step
from kdforge.train.mutual import MutualModule
from kdforge.train.schedule import TermSchedule
from kdforge.types import IGNORE_INDEX, TensorData


def _check_sparse(module: DistillModule | MutualModule, teacher: CachedTeacher) -> None:
    """A top-k, sampled or top-k + tail cache is read sparsely (no dense teacher logits): every term must be able
    to, with its options."""
    kind = teacher.store.settings.logits
    held = {"topk": "top-k logits", "sampled": "sampled tokens", "topk_tail": "top-k log-probabilities + tail mass"}
    for name, term in module.loss.terms.items():
        reason = topk_refusal(term, kind)  # each loss says why it cannot (its `sparse_refusal`), or None
        if kind == "topk" and reason is None and getattr(term, "tail", teacher.tail) != teacher.tail:
            reason = (f"its tail={term.tail!r} differs from the cache's teacher.cache.tail={teacher.tail!r}, "
                      "which rebuilds the teacher")
        if reason is not None:
            raise RecipeError(
                f"recipe.losses ({name}): the teacher cache holds {held.get(kind, kind)}, and {reason}. Build a "
                "full-logit cache (teacher.cache.logits: full) or run the teacher online, which every loss reads; "
                "or, with this cache, use kd or token_kd (forward_kl)."
            )


def preflight(module: DistillModule | MutualModule, teacher: OnlineTeacher | None, data: TensorData,
              declared_taps: tuple[set[str], set[str]], batch_size: int = 8,
              schedule: TermSchedule | None = None) -> dict[str, tuple[int, ...]]:
    """One small batch through teacher, student and loss before training: every tap fires, every tap a loss
    reads is declared, labels fit the student's outputs, the loss is finite and reaches the student, and
    progressive stages (`schedule`) go bottom layer first.

    Every term counts, terms that start later too. Runs in train mode (so training-only branches fire their
    hooks) and puts every buffer back afterwards, so batch-norm statistics are untouched; gradients are
    cleared too. Returns the captured shapes (for logging).
    """
    needed_student, needed_teacher = module.loss.required_taps()
    for side, needed, declared in (("student", needed_student, declared_taps[0]),
                                   ("teacher", needed_teacher, declared_taps[1])):
        missing = sorted(needed - declared)
        if missing:
            raise RecipeError(
                f"recipe.taps.{side}: the losses read {missing}, which are not declared. "
                f"Add them under taps.{side} as name: module.path."
            )
    teacher_model = teacher.model if isinstance(teacher, OnlineTeacher) else None
    for name, term in module.loss.terms.items():
        try:
            term.check_models(module.student, teacher_model)
        except ValueError as exc:
            raise RecipeError(f"recipe.losses ({name}): {exc}") from None
    if schedule is not None and isinstance(module, DistillModule):
        schedule.check_layer_order(module.student, module.taps)
    _check_devices(module, teacher)
    if isinstance(teacher, OnlineTeacher) and is_paired(data):
        _check_teacher_reads_its_tokens(teacher.inputs)
    if isinstance(teacher, CachedTeacher) and teacher.sparse:
        _check_sparse(module, teacher)
    fused = fused_refusal(module.loss.terms, mutual=isinstance(module, MutualModule))
    if fused is not None:
        raise RecipeError(f"recipe.losses: {fused}.")
    batch = data[slice(0, batch_size)]
    device = next(module.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    # Train mode, so branches that only run in training (dropout views, a booster) fire their hooks; the
    # buffers (batch-norm statistics) are put back afterwards so the dry run leaves no trace.
    buffers = {name: buffer.clone() for name, buffer in module.named_buffers()}
    was_training = module.training
    module.train()
    try:
        with module.loss.all_terms():  # terms that start later are checked now too
            if teacher is not None:
                teacher_outputs = teacher(batch)
                if isinstance(teacher, OnlineTeacher):
                    teacher.capture.check_fired()
                # an off-by-one teacher trains towards the wrong token, silently
                check_alignment(teacher_outputs.logits, batch.get("teacher_labels", batch.get("labels")),
                                "recipe.teacher")  # a cross-tokenizer teacher: its own tokens
            _check_labels(batch, module)
            if isinstance(module, DistillModule):
                student_outputs = module._student_outputs(batch)
                module.capture.check_fired()
                if teacher is not None:  # token-level KD: one vocabulary, or the real part of padded ones
                    check_vocabularies(module.loss, student_outputs.logits, teacher_outputs.logits, "recipe.losses")
            try:
                terms = standard_step(module, teacher, batch)
            except ShapeMismatchError as exc:
                if "recipe." in str(exc):
                    raise
                raise ShapeMismatchError(f"recipe.teacher / recipe.student (checked on one batch): {exc}") from None
        bad = [k for k, v in terms.items() if not torch.isfinite(v).all()]
        if bad:
            raise KDForgeError(f"preflight: loss term(s) {bad} are not finite on the first batch. Check the inputs.")
        terms["loss"].backward()
        if all(p.grad is None for p in module.student.parameters()):
            raise KDForgeError("preflight: no gradient reaches the student; check that the losses use its outputs.")
    finally:
        module.zero_grad(set_to_none=True)
        module.train(was_training)
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                if name in buffers:  # buffers a lazy part created during the dry run keep their values
                    buffer.copy_(buffers[name])
    shapes = {}
    if isinstance(module, DistillModule):
        shapes = {f"student.{k}": tuple(v.shape) for k, v in module.capture.features.items()}
    if teacher is not None:
        shapes.update({f"teacher.{k}": tuple(v.shape) for k, v in teacher_outputs.features.items()})
    return shapes


def _check_teacher_reads_its_tokens(inputs: list[str] | Mapping[str, str]) -> None:
    """Rows paired across tokenizers carry the teacher's own tokens under `teacher_*` keys; a teacher that reads
    the student's `input_ids` instead runs on ids of another vocabulary, silently when they happen to fit its
    embedding."""
    keys = set(inputs.values()) if isinstance(inputs, Mapping) else set(inputs)
    if not keys & set(TEACHER_KEYS.values()):
        mapping = ", ".join(f"{plain}: {TEACHER_KEYS[plain]}" for plain in ("input_ids", "attention_mask"))
        raise RecipeError(f"recipe.teacher.inputs: the rows pair two tokenizations, and the teacher reads "
                          f"{sorted(keys)}, the student's tokens. Let it read its own: inputs: {{{mapping}}} "
                          "(Python: teacher_inputs={...}).")


def check_lm_recipe(recipe: Recipe, data: DataBundle) -> None:
    """Language-model recipes, before any model is trained: `kdforge doctor`'s tokenizer and template checks
    (`kdforge.app.doctor`; an error refuses the run, a warning is logged), and a teacher cache (rows of seq_len
    columns) never meets batches cut to their longest row (`PaddedRows`)."""
    from kdforge.app.doctor import check_recipe, is_lm_recipe

    if not is_lm_recipe(recipe):
        return
    if recipe.teacher.cache is not None and isinstance(data.student_train, PaddedRows):
        raise RecipeError("recipe.data.args.packing: a teacher cache holds rows of seq_len tokens, but without "
                          "packing each batch is cut to its longest row; set packing: true to train from the cache.")
    tokenizer = getattr(data.tokenizer, "backend", None) if recipe.data.source.startswith("text:") else None
    check_recipe(recipe, tokenizer, logging.getLogger("kdforge"))


def _check_devices(module: DistillModule | MutualModule, teacher: object) -> None:
    """Every model has real weights (not the meta device) on one device, and teacher and student share it."""
    sides = {"recipe.student": module.student}
    if isinstance(module, MutualModule):
        sides["recipe.teacher"] = module.peer
    elif isinstance(teacher, OnlineTeacher):
        sides["recipe.teacher"] = teacher.model
    found: dict[str, set[str]] = {}
    for where, model in sides.items():
        devices = {str(t.device) for t in itertools.chain(model.parameters(), model.buffers())}
        if "meta" in devices:
            raise KDForgeError(
                f"{where}: parameters on device meta (shapes without values). Make the factory return a model with "
                "real weights (not device='meta' or init_empty_weights), on the CPU.")
        if len(devices) > 1:
            raise KDForgeError(f"{where}: parameters on several devices {sorted(devices)}. Create the model on the "
                               "CPU; kdforge moves it to the accelerator's device.")
        found[where] = devices
    if len(set().union(*found.values())) > 1:
        raise KDForgeError(
            "recipe.teacher / recipe.student: the teacher is on " + ", ".join(sorted(found["recipe.teacher"]))
            + " and the student on " + ", ".join(sorted(found["recipe.student"])) + ". Create both on the CPU "
            "(kdforge moves them to the accelerator's device), or on the same device.")


def _check_labels(batch: dict, module: DistillModule | MutualModule) -> None:
    labels = batch.get("labels")
    if labels is None:
        return
    with torch.no_grad():
        num_outputs = logits_of(call_model(module.student, batch, module.inputs)).shape[-1]
    known = labels[labels != IGNORE_INDEX]
    if known.numel() and int(known.max()) >= num_outputs:
        raise ShapeMismatchError(
            f"data: labels go up to {int(known.max())} but the student has {num_outputs} outputs. "
            f"Give the student num_classes >= {int(known.max()) + 1}, or fix the labels."
        )
