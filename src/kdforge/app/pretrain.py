"""`student.pretrain`: a model trained with cross-entropy on its own data once per run, whose matching tensors
then initialise every seed's student (Turc et al. 2019, "well-read students")."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdforge import io
from kdforge.app.build import plain_training
from kdforge.app.data import load_recipe_data
from kdforge.app.rundir import load_log
from kdforge.app.teacher import model_from_spec
from kdforge.data import DataBundle, sequential_batches
from kdforge.metrics.task import accuracy, token_nll
from kdforge.models import count_params, load_saved_model, save_model
from kdforge.models.forward import call_model, logits_of
from kdforge.processes import seed_everything
from kdforge.recipe import Recipe

logger = logging.getLogger("kdforge")


def pretrained(recipe: Recipe, run_dir: Path, resume: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The `student.pretrain` model, trained with cross-entropy on its own data once per run, at its own fixed
    `train.seed` (Turc et al. 2019 pre-train each compact model once; the seeds then vary the task stage, and
    pre-training is the expensive stage). The first student that needs it trains it (resumable from its
    checkpoints with --resume); the others, and a resumed run, load `<run>/pretrain/`, which a run folder holds
    only from this run (kdforge refuses to reuse a folder without --resume)."""
    spec = recipe.student.pretrain
    folder, where = run_dir / "pretrain", "recipe.student.pretrain"
    if (folder / "model.json").is_file():
        return load_saved_model(folder, where, recipe.base_dir)[0], json.loads(
            (folder / "pretrain_metrics.json").read_text())
    data = load_recipe_data(spec.data, recipe.base_dir, where=f"{where}.data")
    seed_everything(spec.train.seed)
    model, model_spec, args = model_from_spec(spec, recipe, data, where)
    plain_training(model, spec.inputs, data, spec.train, data.teacher_train, folder, recipe.eval.batch_size, resume,
                   "pretrain")
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
