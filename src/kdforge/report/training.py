"""How training went, read from each stage's `log.jsonl`: did it diverge (`kdforge.train.divergence`), and could
the validation set tell the evaluated steps apart when `select: best` picked one (`selection_checks`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdforge.train.divergence import detect_divergence, divergence_message, read_log

if TYPE_CHECKING:
    from kdforge.recipe import Recipe

ROW_RESOLVED = ("val/accuracy", "val/agreement")  # monitors that move in steps of one validation row
RESOLVING_ROWS = 100  # below this, one validation row is worth more than a point of accuracy


def stages(out_dir: Path, recipe: Recipe) -> list[tuple[str, int | None, Path, Any, str]]:
    """(model, seed, folder, its train settings, where they live in the recipe) of every trained stage."""
    found: list[tuple[str, int | None, Path, Any, str]] = []
    if recipe.teacher.train is not None:
        found.append(("teacher", None, out_dir / "teacher", recipe.teacher.train, "teacher.train"))
    for seed in recipe.seeds:
        found.append(("student", seed, out_dir / f"seed-{seed}" / "student", recipe.train, "train"))
        if recipe.baseline:
            found.append(("scratch", seed, out_dir / f"seed-{seed}" / "scratch", recipe.train, "train"))
    return found


def _label(model: str, seed: int | None) -> str:
    return model if seed is None else f"{model} (seed {seed})"


def divergence_entries(out_dir: Path, recipe: Recipe, num_classes: int | None) -> list[dict[str, Any]]:
    """One entry per trained model whose log shows divergence: its `message` names the setting to look at."""
    entries = []
    for model, seed, folder, train, where in stages(out_dir, recipe):
        found = detect_divergence(read_log(folder / "log.jsonl"), num_classes)
        if found.diverged:
            entries.append({"model": model, "seed": seed, **found.as_dict(),
                            "message": divergence_message(_label(model, seed), found, where, train.lr)})
    return entries


def selection_check(evals: list[dict[str, Any]], monitor: str, n_val: int) -> dict[str, Any] | None:
    """Whether the validation set can tell apart the steps `select: best` chose among: the evaluations whose
    monitored value lies within one validation row (1 / n_val) of the best. Too small: two or more of them on a
    set of fewer than `RESOLVING_ROWS` rows, where one row is worth more than a point. None when not applicable."""
    values = [(e["step"], e[monitor]) for e in evals if monitor in e and math.isfinite(e[monitor])]
    if monitor not in ROW_RESOLVED or n_val <= 0 or len(values) < 2:
        return None
    best = max(v for _, v in values)
    near = [step for step, v in values if v >= best - 1.0 / n_val - 1e-12]
    return {"monitor": monitor, "n_val": n_val, "evaluations": len(values), "best_value": best,
            "near_best": len(near), "near_best_steps": near, "too_small": len(near) >= 2 and n_val < RESOLVING_ROWS}


def selection_entries(out_dir: Path, recipe: Recipe, n_val: int) -> list[dict[str, Any]]:
    """For every stage trained with `select: best`: the check above, its best and last step, and a warning."""
    entries = []
    for model, seed, folder, train, where in stages(out_dir, recipe):
        if train.select != "best":
            continue
        evals = [r for r in read_log(folder / "log.jsonl") if train.monitor in r]
        check = selection_check(evals, train.monitor, n_val)
        if check is None:
            continue
        kept = _kept_step(folder)
        entry = {"model": model, "seed": seed, "kept_step": kept,
                 "last_step": evals[-1]["step"] if evals else None, **check}
        if check["too_small"]:
            entry["message"] = (
                f"{_label(model, seed)}: {check['near_best']} of {check['evaluations']} validation checks scored "
                f"within one validation row (1/{n_val} = {100 / n_val:.1f} points of {train.monitor}) of the best, "
                f"so the {n_val}-row validation set cannot tell these steps apart; step {kept} was kept (ties go "
                f"to the lower validation loss, then the later step). Compare best and last below, or enlarge "
                f"data.val_size (or set {where}.select: last).")
        entries.append(entry)
    return entries


def _kept_step(folder: Path) -> int | None:
    import json

    summary = folder / "train_summary.json"
    return json.loads(summary.read_text()).get("best_step") if summary.is_file() else None
