"""The keys every report.json starts with, and what the loss terms measured: shared by the classification and
the label-free report."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdforge.app.rundir import ModelResult
    from kdforge.data import DataBundle
    from kdforge.recipe import Recipe

REPORT_VERSION = 2


def run_header(recipe: Recipe, data: DataBundle, task: str | None = None, **data_counts: Any) -> dict[str, Any]:
    """The keys every report.json starts with (docs/report.md, "Run and data"), for classification and label-free
    reports alike; `task` marks a non-classification report, `data_counts` adds that task's own `data` keys."""
    header: dict[str, Any] = {"report_version": REPORT_VERSION}
    if task is not None:
        header["task"] = task
    counts = {"train": len(data.teacher_train), "student_train": len(data.student_train),
              "val": len(data.val) if data.val is not None else 0, "test": len(data.test)}
    return {
        **header,
        "name": recipe.name,
        "seeds": list(recipe.seeds),
        "confidence": recipe.eval.confidence,
        "recipe_dir": recipe.base_dir,
        "data": {"source": recipe.data.source, **counts, **data_counts},
        "losses": [{"name": t.name, "weight": t.weight, **t.params} for t in recipe.losses],
    }


def method_metrics(students: dict[int, ModelResult]) -> dict[str, Any]:
    """`methods`: each seed's `method_metrics.json` (what a loss term measured after training), keyed by seed."""
    return {str(seed): json.loads((r.folder / "method_metrics.json").read_text())
            for seed, r in students.items() if (r.folder / "method_metrics.json").is_file()}
