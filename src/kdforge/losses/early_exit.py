"""Early-exit inference for a student trained with `multi_exit`: stop at the first confident exit.

The exits are forward hooks on the student's own modules (the same paths the recipe taps), so the user's
model is not rewritten. When an exit is confident enough, the hook raises an internal signal that unwinds
the rest of the forward pass: the layers above that exit really do not run, which is where the speed-up
comes from. Confidence is FastBERT's: prediction entropy divided by log K (0 = certain, 1 = uniform).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from kdforge.capture import resolve_module
from kdforge.models.forward import call_model, logits_of
from kdforge.types import TensorData


class _Exit(Exception):
    def __init__(self, logits: Tensor, exit_index: int) -> None:
        super().__init__()
        self.logits, self.exit_index = logits, exit_index


def normalized_entropy(logits: Tensor) -> Tensor:
    """H(softmax(z)) / log K per row, in [0, 1]."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1) / math.log(logits.shape[-1])


class EarlyExit:
    """Run `student` with exits at `paths` (module paths, shallow to deep) and their trained `heads` (each maps
    the feature at its path to logits: `multi_exit`'s `ExitHead`s).

    `predict(batch, threshold)` returns (logits, exit index); index len(paths) means the final output. A
    batch exits only when every row is confident, so measure speed with batch size 1 (the setting early
    exit is for); accuracy does not depend on the batch size.
    """

    def __init__(self, student: nn.Module, paths: Sequence[str], heads: Sequence[nn.Module], inputs: list[str]):
        if len(paths) != len(heads):
            raise ValueError(f"EarlyExit: {len(paths)} exit paths but {len(heads)} heads.")
        self.student, self.heads, self.inputs = student, list(heads), inputs
        self.threshold = 0.0
        self._handles = [resolve_module(student, path, where=f"exits[{i}]").register_forward_hook(self._hook(i))
                         for i, path in enumerate(paths)]

    def _hook(self, index: int):
        def hook(module: nn.Module, args: object, output: Tensor) -> None:
            logits = self.heads[index](output)
            if bool((normalized_entropy(logits) < self.threshold).all()):
                raise _Exit(logits, index)

        return hook

    @torch.no_grad()
    def predict(self, batch: Mapping[str, Tensor], threshold: float) -> tuple[Tensor, int]:
        self.threshold = threshold
        try:
            return logits_of(call_model(self.student, batch, self.inputs)), len(self.heads)
        except _Exit as signal:
            return signal.logits, signal.exit_index

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def early_exit_curve(runner: EarlyExit, data: TensorData, thresholds: Sequence[float],
                     max_samples: int = 300) -> list[dict[str, float]]:
    """Accuracy, mean exit depth and measured per-sample latency (batch size 1) for each threshold.

    Threshold 0 never exits early: its latency is the full network's, and `speedup` is relative to it.
    """
    runner.student.eval()
    for head in runner.heads:
        head.eval()
    n = min(len(data), max_samples)
    rows = [data[slice(i, i + 1)] for i in range(n)]
    curve = []
    for threshold in sorted({0.0, *thresholds}):
        correct, depth = 0, 0
        runner.predict(rows[0], threshold)  # warm-up
        started = time.perf_counter()
        for row in rows:
            logits, index = runner.predict(row, threshold)
            correct += int(logits.argmax(-1).item() == row["labels"].item())
            depth += index
        seconds = time.perf_counter() - started
        curve.append({"threshold": threshold, "accuracy": correct / n, "mean_exit": depth / n,
                      "latency_ms": 1000 * seconds / n})
    full = curve[0]["latency_ms"]
    for point in curve:
        point["speedup"] = full / point["latency_ms"]
    return curve
