"""The run report: `report.json` (stable keys), `report.md`, and PNG plots."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdforge import io
from kdforge.report.markdown import render_markdown
from kdforge.report.plots import plot_accuracy, plot_curves

if TYPE_CHECKING:
    from kdforge.data import DataBundle
    from kdforge.pipeline import ModelResult
    from kdforge.recipe import Recipe

REPORT_VERSION = 1


def _mean(values: list[float]) -> float:
    return float(statistics.fmean(values))


def _std(values: list[float]) -> float:
    return float(statistics.stdev(values)) if len(values) > 1 else 0.0


def summarise(results: dict[int, ModelResult]) -> dict[str, Any]:
    """Mean and std over seeds, the weakest seed's agreement bound, and every seed's numbers."""
    per_seed = [{"seed": seed, **{k: v for k, v in r.metrics.items()}} for seed, r in results.items()]
    acc = [m["accuracy"] for m in per_seed]
    agree = [m["agreement"] for m in per_seed]
    return {
        "accuracy": _mean(acc),
        "accuracy_std": _std(acc),
        "agreement": _mean(agree),
        "agreement_std": _std(agree),
        "agreement_lower_95": min(m["agreement_lower_95"] for m in per_seed),
        "params": per_seed[0]["params"],
        "per_seed": per_seed,
    }


def write_report(out_dir: Path, recipe: Recipe, data: DataBundle, teacher: dict[str, Any],
                 students: dict[int, ModelResult], scratch: dict[int, ModelResult],
                 env: dict[str, Any]) -> dict[str, Any]:
    """Build the report dict, write report.json / report.md / plots, and return the dict."""
    student = summarise(students)
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "name": recipe.name,
        "seeds": list(recipe.seeds),
        "confidence": recipe.eval.confidence,
        "data": {
            "source": recipe.data.source,
            "train": len(data.teacher_train),
            "student_labelled": len(data.scratch_train),
            "student_train": len(data.student_train),
            "val": len(data.val) if data.val is not None else 0,
            "test": len(data.test),
            "num_classes": data.info.num_classes,
        },
        "losses": [{"name": t.name, "weight": t.weight, **t.params} for t in recipe.losses],
        "teacher": teacher,
        "student": student,
        "agreement": student["agreement"],
        "agreement_lower_95": student["agreement_lower_95"],
        "environment": env,
    }
    if scratch:
        report["scratch"] = summarise(scratch)
        report["kd_gain"] = student["accuracy"] - report["scratch"]["accuracy"]
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    report["plots"] = [
        str(plot_accuracy(report, plots / "accuracy.png").relative_to(out_dir)),
        str(plot_curves(out_dir, list(recipe.seeds), bool(scratch), plots / "curves.png").relative_to(out_dir)),
    ]
    io.write_json(out_dir / "report.json", report)
    io.write_text(out_dir / "report.md", render_markdown(report))
    return report
