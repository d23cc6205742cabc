"""Run models over a dataset and compare them: accuracy, teacher-student agreement with its bound."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from kdforge.data.tensors import TensorData, sequential_batches
from kdforge.metrics import accuracy, clopper_pearson, clopper_pearson_lower, top1_agreement
from kdforge.models.forward import call_model, logits_of


@torch.no_grad()
def predict_logits(model: nn.Module, data: TensorData, inputs: list[str], batch_size: int = 512) -> Tensor:
    """Logits of `model` on every row of `data`, in order, on the CPU. The model is put in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for batch in sequential_batches(data, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs.append(logits_of(call_model(model, batch, inputs)).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def accuracy_summary(labels: Tensor, logits: Tensor, confidence: float) -> dict[str, float]:
    correct, n = accuracy(labels, logits)
    lower, upper = clopper_pearson(correct, n, confidence)
    return {"accuracy": correct / n, "accuracy_lower": lower, "accuracy_upper": upper, "n": n}


def agreement_summary(teacher_logits: Tensor, student_logits: Tensor, confidence: float) -> dict[str, float]:
    agree, n = top1_agreement(teacher_logits, student_logits)
    lower, upper = clopper_pearson(agree, n, confidence)
    return {"agreement": agree / n, "agreement_lower": lower, "agreement_upper": upper,
            "agreement_lower_95": clopper_pearson_lower(agree, n, 0.95), "n": n}


def validator(data: TensorData, inputs: list[str], teacher_logits: Tensor | None,
              batch_size: int = 512) -> Callable[[nn.Module], dict[str, float]]:
    """A `validate(student)` function for the loop: val accuracy and (with a teacher) agreement."""

    def validate(student: nn.Module) -> dict[str, float]:
        logits = predict_logits(student, data, inputs, batch_size)
        correct, n = accuracy(data.tensors["labels"], logits)
        metrics = {"val/accuracy": correct / n}
        if teacher_logits is not None:
            agree, total = top1_agreement(teacher_logits, logits)
            metrics["val/agreement"] = agree / total
        return metrics

    return validate
