"""The report of a label-free run (sentence-embedding distillation): the student is judged against the teacher
only, by cosine to its embeddings, MSE and the Spearman correlation of pairwise similarities, plus size and
speed. No accuracy, agreement, PAC bound or KD gain: without labels or classes none of them is defined.

`write_report` calls `build_embedding_report` when the test split has no `labels`; `content.summary_sections`
calls `embedding_content.embedding_sections` for a report whose `task` is "embedding".
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdforge.errors import one_line
from kdforge.report.header import method_metrics, run_header

if TYPE_CHECKING:
    from torch import nn

    from kdforge.app.rundir import ModelResult
    from kdforge.data import DataBundle
    from kdforge.evaluate import EvalOptions
    from kdforge.recipe import Recipe

logger = logging.getLogger("kdforge")

# Per-seed test metrics averaged over seeds (their `_std` is reported beside the mean for cosine and spearman).
AVERAGED = ("cosine", "cosine_p05", "mse", "spearman")


def summarise_embedding(results: dict[int, ModelResult]) -> dict[str, Any]:
    """Mean (and std) over seeds of the embedding metrics, the worst seed's minimum cosine, every seed's numbers."""
    per_seed = [{"seed": seed, **dict(r.metrics)} for seed, r in results.items()]
    summary: dict[str, Any] = {}
    for key in AVERAGED:
        values = [m[key] for m in per_seed if m.get(key) is not None]
        summary[key] = float(statistics.fmean(values)) if values else None
        if key in ("cosine", "spearman"):
            summary[f"{key}_std"] = float(statistics.stdev(values)) if len(values) > 1 else 0.0
    summary["cosine_min"] = min(m["cosine_min"] for m in per_seed)
    if all("cosine_last" in m for m in per_seed):  # `select: best`: the last step's figures beside the best
        summary["cosine_last"] = float(statistics.fmean(m["cosine_last"] for m in per_seed))
    summary["params"] = per_seed[0]["params"]
    summary["per_seed"] = per_seed
    return summary


def build_embedding_report(out_dir: Path, recipe: Recipe, data: DataBundle, teacher: dict[str, Any],
                           students: dict[int, ModelResult], env: dict[str, Any], teacher_model: nn.Module | None,
                           opts: EvalOptions | None) -> dict[str, Any]:
    """report.json's dict for a label-free run, with its plots written under out_dir/plots."""
    from kdforge.report.plots import plot_curves

    student = summarise_embedding(students)
    seed = min(students, key=lambda s: (students[s].metrics["cosine"], s))  # the weakest seed is evaluated
    report: dict[str, Any] = {
        **run_header(recipe, data, task="embedding", dim=teacher.get("dim")),
        "teacher": teacher,
        "student": student,
        "cosine": student["cosine"],
        "spearman": student["spearman"],
        "params_ratio": student["params"] / max(teacher["params"], 1),
        "evaluated_seed": seed,
        "environment": env,
    }
    methods = method_metrics(students)
    if methods:
        report["methods"] = methods
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = [plot_curves(out_dir, list(recipe.seeds), False, plots / "curves.png", val_key="val/cosine")]
    if teacher_model is not None:
        try:
            written += _evaluate(report, recipe, data, teacher_model, students[seed].model, opts, plots)
        except Exception as exc:  # noqa: BLE001 - a finished run keeps its basic report whatever happens here
            report["evaluation_error"] = one_line(exc)
            logger.warning("the embedding evaluation failed (%s); the basic report follows",
                           report["evaluation_error"])
    report["plots"] = [str(p.relative_to(out_dir)) for p in written]
    return report


def _evaluate(report: dict[str, Any], recipe: Recipe, data: DataBundle, teacher_model: nn.Module,
              student_model: nn.Module, opts: EvalOptions | None, plots: Path) -> list[Path]:
    """Add the evaluated seed's `embedding` and `cost` sections (and throughput_ratio) to `report`; its plots."""
    from kdforge.evaluate import EvalOptions, embedding_evaluation, predict_logits
    from kdforge.metrics.embedding import cosine_to_teacher
    from kdforge.report.plots import plot_cosines, plot_cost

    opts = opts or EvalOptions(confidence=recipe.eval.confidence)
    batch_size = recipe.eval.batch_size
    teacher_emb = predict_logits(teacher_model, data.test, recipe.teacher.inputs, batch_size)
    student_emb = predict_logits(student_model, data.test, recipe.student.inputs, batch_size)
    sections = embedding_evaluation(teacher_model, student_model, data.test, recipe.teacher.inputs,
                                    recipe.student.inputs, opts, teacher_emb=teacher_emb, student_emb=student_emb,
                                    batch_size=batch_size)
    report["eval_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()}
    report.update(sections)
    written = [plot_cosines(cosine_to_teacher(teacher_emb, student_emb).numpy(), plots / "cosines.png")]
    cost = report["cost"]
    if cost.get("available", True):
        # rows/s of the student over the teacher's at the largest measured batch: the encode-throughput ratio
        t, s = cost["teacher"]["latency"][-1], cost["student"]["latency"][-1]
        report["throughput_ratio"] = s["throughput"] / t["throughput"] if t["throughput"] > 0 else None
        written.append(plot_cost(cost, plots / "cost.png"))
    return written
