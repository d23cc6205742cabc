"""The run report: `report.json` (stable keys, see docs/report.md), `report.md`, a self-contained
`report.html`, and PNG plots."""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdforge import io
from kdforge.errors import one_line
from kdforge.lm.cross_data import is_paired
from kdforge.report.header import REPORT_VERSION, method_metrics, run_header  # noqa: F401
from kdforge.report.html import render_html
from kdforge.report.markdown import render_markdown
from kdforge.report.plots import (
    plot_accuracy,
    plot_agreement_confidence,
    plot_confusion,
    plot_cost,
    plot_curves,
    plot_explanations,
    plot_reliability,
)
from kdforge.report.training import divergence_entries, selection_entries

if TYPE_CHECKING:
    from torch import Tensor, nn

    from kdforge.app.rundir import ModelResult
    from kdforge.data import DataBundle
    from kdforge.evaluate import EvalOptions
    from kdforge.recipe import Recipe

logger = logging.getLogger("kdforge")


# Sections `evaluate_pair` adds for the evaluated student (see docs/report.md).
DETAIL_SECTIONS = ("fidelity", "accuracy", "per_class", "confusion", "agreement_by_confidence", "calibration",
                   "explanations", "robustness", "cost")



def name_classes(report: dict[str, Any], class_names: tuple[str, ...] | None) -> None:
    """Class names (the data's, or the recipe's `data.class_names`) beside the class ids: `data.class_names`
    and `per_class[].name`, so tables, figures and the confusion summary speak of "setosa", not of class 0."""
    if not class_names:
        return
    report["data"]["class_names"] = list(class_names)
    for row in report.get("per_class", []):
        if 0 <= row["class"] < len(class_names):
            row["name"] = class_names[row["class"]]

def _mean(values: list[float]) -> float:
    return float(statistics.fmean(values))


def _std(values: list[float]) -> float:
    return float(statistics.stdev(values)) if len(values) > 1 else 0.0


def summarise(results: dict[int, ModelResult], extras: dict[int, dict[str, float]] | None = None) -> dict[str, Any]:
    """Mean and std over seeds, the weakest seed's agreement bound, and every seed's numbers.

    `extras` (per seed: kl, js, probability_loyalty, ece) are added to each seed's entry and averaged.
    """
    extras = extras or {}
    per_seed = [{"seed": seed, **dict(r.metrics), **extras.get(seed, {})} for seed, r in results.items()]
    acc = [m["accuracy"] for m in per_seed]
    agree = [m["agreement"] for m in per_seed]
    summary = {
        "accuracy": _mean(acc),
        "accuracy_std": _std(acc),
        "agreement": _mean(agree),
        "agreement_std": _std(agree),
        "agreement_lower_95": min(m["agreement_lower_95"] for m in per_seed),
        "params": per_seed[0]["params"],
        "per_seed": per_seed,
    }
    for key in ("kl", "js", "probability_loyalty", "ece", "bits_per_byte"):
        if all(key in m for m in per_seed):
            summary[key] = _mean([m[key] for m in per_seed])
    if all("accuracy_last" in m for m in per_seed):  # `select: best`: the last step's figures beside the best
        last = [m["accuracy_last"] for m in per_seed]
        summary["accuracy_last"], summary["accuracy_last_std"] = _mean(last), _std(last)
    return summary


def _seed_extras(teacher_logits: Tensor, logits: Tensor, labels: Tensor, n_bins: int) -> dict[str, float]:
    from kdforge.metrics import expected_calibration_error, js_divergence, kl_to_teacher, probability_loyalty

    if labels.shape != teacher_logits.shape[:1] or not bool((labels != -100).any()):
        return {"kl": kl_to_teacher(teacher_logits, logits), "js": js_divergence(teacher_logits, logits),
                "probability_loyalty": probability_loyalty(teacher_logits, logits)}
    return {"kl": kl_to_teacher(teacher_logits, logits), "js": js_divergence(teacher_logits, logits),
            "probability_loyalty": probability_loyalty(teacher_logits, logits),
            "ece": expected_calibration_error(labels, logits, n_bins)}


def write_report(out_dir: Path, recipe: Recipe, data: DataBundle, teacher: dict[str, Any],
                 students: dict[int, ModelResult], scratch: dict[int, ModelResult],
                 env: dict[str, Any], *, teacher_model: nn.Module | None = None,
                 opts: EvalOptions | None = None) -> dict[str, Any]:
    """Build the report dict, write report.json / report.md / report.html / plots, and return the dict.

    Args:
        out_dir: The run folder.
        recipe: The run's recipe.
        data: The run's data (the report evaluates on `data.test`).
        teacher: The teacher's test metrics (accuracy with its interval, params).
        students: Distilled students per seed, with their test metrics.
        scratch: Baseline students per seed (may be empty; always empty on label-free data).
        env: Versions and threads (`environment.json`).
        teacher_model: The teacher itself; with it the report gains the full fidelity sections (distribution
            match, PAC assessment, per class, calibration, explanations, robustness, cost) for the evaluated
            student, the seed with the weakest agreement bound.
        opts: What the full evaluation measures (default: `EvalOptions(confidence=recipe.eval.confidence)`).
    """
    if "labels" not in data.test.tensors:  # sentence embeddings: judged against the teacher only
        from kdforge.report.embedding import build_embedding_report

        report = build_embedding_report(out_dir, recipe, data, teacher, students, env, teacher_model, opts)
        return _write_files(out_dir, report)
    evaluation, evaluation_error, evaluation_skipped = None, None, None
    if teacher_model is not None and is_paired(data.test):  # skipped by design, not failed (report.json keys)
        evaluation_skipped = ("teacher and student use different tokenizers, so their distributions cannot be "
                              "compared entry by entry; see bits per byte and the agreement at aligned span ends")
    elif teacher_model is not None:
        try:
            evaluation = _evaluate(recipe, data, teacher_model, students, scratch, opts)
        except Exception as exc:  # noqa: BLE001 - a finished run keeps its basic report whatever happens here
            evaluation_error = one_line(exc)
            logger.warning("the detailed fidelity evaluation failed (%s); writing the basic report", evaluation_error)
    student = summarise(students, evaluation["extras_student"] if evaluation else None)
    report: dict[str, Any] = {
        **run_header(recipe, data, student_labelled=len(data.scratch_train), num_classes=data.info.num_classes),
        "teacher": teacher,
        "student": student,
        "agreement": student["agreement"],
        "agreement_lower_95": student["agreement_lower_95"],
        "environment": env,
    }
    if scratch:
        report["scratch"] = summarise(scratch, evaluation["extras_scratch"] if evaluation else None)
        report["kd_gain"] = student["accuracy"] - report["scratch"]["accuracy"]
        report["kd_gain_test"] = _kd_gain_test(recipe, data, students, scratch, evaluation)
    report["divergence"] = divergence_entries(out_dir, recipe, data.info.num_classes)  # from each log.jsonl
    if recipe.train.select == "best" or (recipe.teacher.train is not None and recipe.teacher.train.select == "best"):
        report["selection"] = selection_entries(out_dir, recipe, len(data.val) if data.val is not None else 0)
    methods = method_metrics(students)
    if methods:  # what methods measure after training (early-exit curve, DistillSpec acceptance), per seed
        report["methods"] = methods
    if (out_dir / "student_init.json").is_file():  # from_teacher or pre-trained (app.student.build_student)
        report["student_init"] = json.loads((out_dir / "student_init.json").read_text())
    if evaluation_error is not None:
        report["evaluation_error"] = evaluation_error
    if evaluation_skipped is not None:
        report["evaluation_skipped"] = evaluation_skipped
    if evaluation is not None:
        report["evaluated_seed"] = evaluation["seed"]
        report["eval_options"] = evaluation["options"]
        report.update(evaluation["sections"])
        name_classes(report, data.info.class_names)
        if "calibration" in report:
            report["teacher"] = {**teacher, "ece": report["calibration"]["teacher"]["ece"]}
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written = [
        plot_accuracy(report, plots / "accuracy.png"),
        plot_curves(out_dir, list(recipe.seeds), bool(scratch), plots / "curves.png"),
    ]
    if evaluation is not None:
        written.append(plot_agreement_confidence(report["agreement_by_confidence"], plots / "agreement.png"))
        if "calibration" in report:
            written.append(plot_reliability(report["calibration"], plots / "reliability.png"))
        if "confusion" in report:
            written.append(plot_confusion(report["confusion"]["matrix"], report.get("per_class"),
                                          plots / "confusion.png", report["data"].get("class_names")))
        if evaluation["maps"] is not None:
            written.append(plot_explanations(evaluation["maps"], plots / "explanations.png"))
        if report.get("cost", {}).get("available", True):
            written.append(plot_cost(report["cost"], plots / "cost.png"))
    report["plots"] = [str(p.relative_to(out_dir)) for p in written]
    return _write_files(out_dir, report)


def _kd_gain_test(recipe: Recipe, data: DataBundle, students: dict[int, ModelResult],
                  scratch: dict[int, ModelResult], evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """The paired test behind the "does distillation help?" sentence, on the logits the evaluation already
    computed (or computed here when it did not run)."""
    from kdforge.evaluate import positions, predict_logits
    from kdforge.report.compare import kd_gain_test

    if evaluation is not None:
        student_logits, scratch_logits = evaluation["logits"]
    else:
        student_logits, scratch_logits = ({seed: predict_logits(r.model, data.test, recipe.student.inputs,
                                                                recipe.eval.batch_size) for seed, r in res.items()}
                                          for res in (students, scratch))
    flat = positions(data.test)
    return kd_gain_test(flat(data.test.tensors["labels"]), {s: flat(v) for s, v in student_logits.items()},
                        {s: flat(v) for s, v in scratch_logits.items()}, recipe.eval.confidence)


def _write_files(out_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    io.write_json(out_dir / "report.json", report)
    io.write_text(out_dir / "report.md", render_markdown(report))
    io.write_text(out_dir / "report.html", render_html(report, out_dir))
    return report


def _evaluate(recipe: Recipe, data: DataBundle, teacher_model: nn.Module, students: dict[int, ModelResult],
              scratch: dict[int, ModelResult], opts: EvalOptions | None) -> dict[str, Any]:
    """Logits of every model on the test split, per-seed extras, and the full evaluation of the weakest seed."""
    from kdforge.evaluate import EvalOptions, calibration_section, evaluate_pair, positions, predict_logits

    opts = opts or EvalOptions(confidence=recipe.eval.confidence)
    batch_size = recipe.eval.batch_size
    flat = positions(data.test)  # sequence logits: one row per (unmasked) position
    labels = flat(data.test.tensors["labels"])
    teacher_logits = predict_logits(teacher_model, data.test, recipe.teacher.inputs, batch_size)

    def logits_of(results: dict[int, ModelResult]) -> dict[int, Tensor]:
        return {seed: predict_logits(r.model, data.test, recipe.student.inputs, batch_size)
                for seed, r in results.items()}

    student_logits, scratch_logits = logits_of(students), logits_of(scratch)
    seed = min(students, key=lambda s: (students[s].metrics["agreement_lower_95"], s))
    result = evaluate_pair(teacher_model, students[seed].model, data.test, recipe.teacher.inputs,
                           recipe.student.inputs, opts, num_classes=data.info.num_classes,
                           teacher_logits=teacher_logits, student_logits=student_logits[seed], batch_size=batch_size)
    sections = result.sections
    if scratch and seed in scratch and "calibration" in sections:
        sections["calibration"]["scratch"] = calibration_section(labels, {"scratch": flat(scratch_logits[seed])},
                                                                 opts.n_bins)["scratch"]
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()}
    return {
        "seed": seed,
        "logits": (student_logits, scratch_logits),
        "options": options,
        "sections": {k: sections[k] for k in DETAIL_SECTIONS if k in sections},
        "maps": result.maps,
        "extras_student": {s: _seed_extras(flat(teacher_logits), flat(v), labels, opts.n_bins)
                           for s, v in student_logits.items()},
        "extras_scratch": {s: _seed_extras(flat(teacher_logits), flat(v), labels, opts.n_bins)
                           for s, v in scratch_logits.items()},
    }
