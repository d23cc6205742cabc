"""Test-split figures of a trained model, as the report reads them from `test_metrics.json`: accuracy and
agreement with their bounds, or on label-free data the embedding fidelity; plus the last step's figures when
`select: best` kept an earlier one."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from kdforge import io
from kdforge.app.rundir import ModelResult, train_summary
from kdforge.data import DataBundle
from kdforge.errors import RecipeError
from kdforge.evaluate import accuracy_summary, agreement_summary, positions, predict_logits
from kdforge.lm.cross_data import is_paired
from kdforge.losses.base import Targets
from kdforge.losses.uld import span_end_positions
from kdforge.metrics.embedding import embedding_fidelity
from kdforge.metrics.task import bits_per_byte, token_nll
from kdforge.models import count_params, load_state_into
from kdforge.recipe import Recipe
from kdforge.types import TensorData


def test_result(model: nn.Module, folder: Path, inputs: list[str], data: DataBundle, labels: torch.Tensor | None,
                teacher_test: torch.Tensor, confidence: float, seconds: float) -> ModelResult:
    """Test metrics of a trained model (`test_metrics.json`): accuracy and agreement, or on label-free data the
    embedding fidelity (cosine to the teacher, MSE, Spearman of pairwise similarities)."""
    if labels is None:
        return _embedding_test_result(model, folder, inputs, data, teacher_test, seconds)
    logits = predict_logits(model, data.test, inputs)
    flat = positions(data.test)  # token tasks: accuracy and agreement count the same positions
    if is_paired(data.test):  # another tokenizer: agree at the aligned span ends, through the shared tokens
        def flat_pair(t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            s_ends, t_ends = span_end_logits(s, t, data.test, getattr(data, "vocab_map", None))
            return t_ends, s_ends
    else:
        def flat_pair(t: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return flat(t), flat(s)
    metrics = {**accuracy_summary(labels, logits, confidence),
               **agreement_summary(*flat_pair(teacher_test, logits), confidence),
               **lm_bits_per_byte(logits, labels, data.test),
               "params": count_params(model), "wall_seconds": seconds, **train_summary(folder)}
    last = last_step_model(model, folder)
    if last is not None:  # `select: best` kept an earlier step: report the last step's figures beside it
        last_logits = predict_logits(last, data.test, inputs)
        metrics["accuracy_last"] = accuracy_summary(labels, last_logits, confidence)["accuracy"]
        metrics["agreement_last"] = agreement_summary(*flat_pair(teacher_test, last_logits), confidence)["agreement"]
    io.write_json(folder / "test_metrics.json", metrics)
    return ModelResult(model, folder, metrics)


test_result.__test__ = False  # a library function, not a pytest test


def span_end_logits(student_logits: Tensor, teacher_logits: Tensor, data: TensorData,
                    mapping: Tensor) -> tuple[Tensor, Tensor]:
    """(student, teacher) logits at every aligned span end of `data`, both over the student's vocabulary: the
    teacher's mapped tokens keep their logits, the student tokens no teacher token maps to get -inf. Top-1
    agreement on these compares the two models' next-token choices on the text both predict (reports)."""
    if mapping is None:
        raise RecipeError("recipe.data: rows paired across tokenizers but no vocabulary mapping came with them; "
                          "pair them with the teacher_tokenizer of text:stdlib_lm or text:lm_file (it attaches the "
                          "mapping).")
    targets = Targets(labels=data.tensors["labels"], mask=data.tensors.get("mask"), batch=data.tensors)
    s_idx, t_idx = span_end_positions(targets, student_logits.shape[:2], teacher_logits.shape[:2], "agreement")
    s = student_logits.flatten(0, 1)[s_idx]
    t = teacher_logits.flatten(0, 1)[t_idx]
    mapped = (mapping >= 0).nonzero().flatten()
    projected = torch.full_like(s, float("-inf"))
    projected[:, mapping[mapped]] = t[:, mapped].to(s.dtype)
    return s, projected


def lm_bits_per_byte(logits: torch.Tensor, labels: torch.Tensor, test: TensorData) -> dict[str, float]:
    """{"bits_per_byte": ...} of a causal LM on the test text when the rows record the bytes they cover
    (`text_bytes`, text:stdlib_lm): tokenizer-independent, so a cross-tokenizer student compares with its
    teacher. Empty for other data."""
    if "text_bytes" not in test.tensors or logits.dim() != 3:
        return {}
    nll, _ = token_nll(labels, logits)
    return {"bits_per_byte": bits_per_byte(nll, int(test.tensors["text_bytes"].sum()))}


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
