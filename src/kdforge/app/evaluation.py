"""Test-split figures of a trained model, as the report reads them from `test_metrics.json`: accuracy and
agreement with their bounds, or on label-free data the embedding fidelity; plus the last step's figures when
`select: best` kept an earlier one."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from kdforge import io
from kdforge.app.rundir import ModelResult, train_summary
from kdforge.data import DataBundle
from kdforge.errors import RecipeError
from kdforge.evaluate import accuracy_summary, agreement_summary, positions, predict_logits
from kdforge.metrics.embedding import embedding_fidelity
from kdforge.models import count_params, load_state_into
from kdforge.recipe import Recipe


def test_result(model: nn.Module, folder: Path, inputs: list[str], data: DataBundle, labels: torch.Tensor | None,
                teacher_test: torch.Tensor, confidence: float, seconds: float) -> ModelResult:
    """Test metrics of a trained model (`test_metrics.json`): accuracy and agreement, or on label-free data the
    embedding fidelity (cosine to the teacher, MSE, Spearman of pairwise similarities)."""
    if labels is None:
        return _embedding_test_result(model, folder, inputs, data, teacher_test, seconds)
    logits = predict_logits(model, data.test, inputs)
    flat = positions(data.test)  # token tasks: accuracy and agreement count the same positions
    metrics = {**accuracy_summary(labels, logits, confidence),
               **agreement_summary(flat(teacher_test), flat(logits), confidence),
               "params": count_params(model), "wall_seconds": seconds, **train_summary(folder)}
    last = last_step_model(model, folder)
    if last is not None:  # `select: best` kept an earlier step: report the last step's figures beside it
        last_logits = predict_logits(last, data.test, inputs)
        metrics["accuracy_last"] = accuracy_summary(labels, last_logits, confidence)["accuracy"]
        metrics["agreement_last"] = agreement_summary(flat(teacher_test), flat(last_logits), confidence)["agreement"]
    io.write_json(folder / "test_metrics.json", metrics)
    return ModelResult(model, folder, metrics)


test_result.__test__ = False  # a library function, not a pytest test


def _embedding_test_result(model: nn.Module, folder: Path, inputs: list[str], data: DataBundle,
                           teacher_test: torch.Tensor, seconds: float) -> ModelResult:
    metrics = {**embedding_fidelity(teacher_test, predict_logits(model, data.test, inputs)),
               "params": count_params(model), "wall_seconds": seconds, **train_summary(folder)}
    last = last_step_model(model, folder)
    if last is not None:  # `select: best` kept an earlier step: report the last step's figures beside it
        last_fidelity = embedding_fidelity(teacher_test, predict_logits(last, data.test, inputs))
        metrics.update(cosine_last=last_fidelity["cosine"], spearman_last=last_fidelity["spearman"])
    io.write_json(folder / "test_metrics.json", metrics)
    return ModelResult(model, folder, metrics)


def last_step_model(model: nn.Module, folder: Path) -> nn.Module | None:
    """A copy of `model` with the last step's weights, when `select: best` saved them beside the best ones."""
    last_file = folder / "last.safetensors"
    if not last_file.is_file():
        return None
    last = copy.deepcopy(model)
    load_state_into(last, io.load_weights_file(last_file, str(last_file)), str(last_file))
    return last


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
