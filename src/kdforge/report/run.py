"""Reopen a finished run folder: its recipe, data, teacher and students, to evaluate, re-report or export it.

Used by `kdforge report RUN_DIR`, `kdforge eval RUN_DIR` and `kdforge export RUN_DIR`.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kdforge.app.rundir import RUN_MARKER
from kdforge.errors import KDForgeError
from kdforge.imports import UntrustedCodeError, is_packaged_factory, py_refs, untrusted

if TYPE_CHECKING:
    from torch import nn

    from kdforge.app.rundir import ModelResult
    from kdforge.data import DataBundle
    from kdforge.evaluate import EvalOptions
    from kdforge.recipe import Recipe



@dataclass
class OpenedRun:
    """A run folder with its recipe, and (after `load_data`) its data."""

    out_dir: Path
    recipe: Recipe
    base_dir: str | None
    previous_report: dict[str, Any] = field(default_factory=dict)
    data: DataBundle | None = None
    trust_code: bool = False  # import the `py:` code its recipe and model.json files name (--trust-code)


def open_run(run_dir: str | Path, recipe_dir: str | Path | None = None, trust_code: bool = False) -> OpenedRun:
    """Read `recipe.resolved.yaml` (and the previous report.json, if any) of a run folder.

    A run folder is data, perhaps someone else's: a `py:` reference in its recipe is refused unless `trust_code`
    (and the models are then loaded under `kdforge.imports.untrusted`, see `trusting`).

    Args:
        run_dir: The folder `kdforge distill --out` wrote.
        recipe_dir: Where the original recipe lived, for relative paths and `py:` models (default: the
            `recipe_dir` stored in report.json, else the run folder).
        trust_code: Import the code the run's recipe and model files name.
    """
    from kdforge.recipe import recipe_from_dict

    out = Path(run_dir)
    marker = out / RUN_MARKER
    if not marker.is_file():
        raise KDForgeError(f"run folder {str(out)!r} has no {RUN_MARKER}; give the folder `kdforge distill --out` "
                           "wrote (or, for `kdforge eval`, --teacher/--student model folders and --data).")
    previous: dict[str, Any] = {}
    if (out / "report.json").is_file():
        previous = json.loads((out / "report.json").read_text())
    base = str(recipe_dir) if recipe_dir is not None else previous.get("recipe_dir") or str(out)
    raw = yaml.safe_load(marker.read_text())
    refs = sorted(ref for ref in py_refs(raw) if not is_packaged_factory(ref))
    if refs and not trust_code:
        raise UntrustedCodeError(
            f"run folder {str(out)!r}: its recipe names code to import ({', '.join(refs)}); kdforge reads run "
            "folders as data and imports nothing they name. If you trust whoever wrote it, pass --trust-code "
            "(trust_code=True).")
    recipe = recipe_from_dict(raw, base_dir=base)
    return OpenedRun(out, recipe, recipe.base_dir, previous, trust_code=trust_code)


def trusting(run: OpenedRun) -> AbstractContextManager[None]:
    """The context a run folder's models and data are loaded in: a `py:` reference is imported only with
    `trust_code`."""
    return untrusted(f"run folder {str(run.out_dir)!r}", run.trust_code)


def run_data(run: OpenedRun) -> DataBundle:
    from kdforge.app.data import load_recipe_data

    if run.data is None:
        run.data = load_recipe_data(run.recipe.data, run.base_dir)
    return run.data


def run_teacher(run: OpenedRun) -> nn.Module:
    """The teacher as the run used it: its saved folder when it was trained here, else from the recipe."""
    from kdforge.models import load_saved_model

    folder = run.out_dir / "teacher"
    if (folder / "model.json").is_file():
        return load_saved_model(folder, "teacher", run.base_dir, run.trust_code)[0]
    if run.recipe.teacher.train is not None:
        raise KDForgeError(f"{str(folder)!r}: the teacher was to be trained in this run but was not saved; "
                           "finish the run with `kdforge distill RECIPE --out DIR --resume` first.")
    from kdforge.app.teacher import run_teacher as teacher_with_cache

    return teacher_with_cache(run.recipe, run_data(run), run.out_dir, resume=True)


def student_folder(run: OpenedRun, seed: int | None, kind: str = "student") -> tuple[int, Path]:
    """(seed, folder) of a saved student; default seed: the one the report evaluated, else the first."""
    seeds = list(run.recipe.seeds)
    if seed is None:
        seed = run.previous_report.get("evaluated_seed", seeds[0])
    elif seed not in seeds:
        raise KDForgeError(f"--seed {seed}: this run has seeds {seeds}. Choose one of them.")
    folder = run.out_dir / f"seed-{seed}" / kind
    if not (folder / "model.json").is_file():
        raise KDForgeError(f"{str(folder)!r} holds no saved {kind}; finish the run with --resume first.")
    return seed, folder


def _results(run: OpenedRun, kind: str) -> dict[int, ModelResult]:
    from kdforge.app.rundir import ModelResult
    from kdforge.models import load_saved_model

    results = {}
    for seed in run.recipe.seeds:
        _, folder = student_folder(run, seed, kind)
        metrics_file = folder / "test_metrics.json"
        if not metrics_file.is_file():
            raise KDForgeError(f"{str(metrics_file)!r} is missing; finish the run with --resume first.")
        model = load_saved_model(folder, str(folder), run.base_dir, run.trust_code)[0]
        results[seed] = ModelResult(model, folder, json.loads(metrics_file.read_text()))
    return results


def regenerate_report(run_dir: str | Path, recipe_dir: str | Path | None = None,
                      opts: EvalOptions | None = None, trust_code: bool = False) -> dict[str, Any]:
    """Rebuild report.json / report.md / report.html / plots of a finished run from its saved models
    (`trust_code`: import the code the run folder names; see `open_run`)."""
    run = open_run(run_dir, recipe_dir, trust_code)
    with trusting(run):
        return _regenerate(run, opts)


def _regenerate(run: OpenedRun, opts: EvalOptions | None) -> dict[str, Any]:
    from kdforge.app.rundir import environment
    from kdforge.evaluate import accuracy_summary, predict_logits
    from kdforge.models import count_params
    from kdforge.report import write_report

    data = run_data(run)
    teacher = run_teacher(run)
    students = _results(run, "student")
    scratch = _results(run, "scratch") if run.recipe.baseline else {}
    confidence = run.recipe.eval.confidence
    logits = predict_logits(teacher, data.test, run.recipe.teacher.inputs, run.recipe.eval.batch_size)
    labels = data.test.tensors.get("labels")
    quality = {"dim": logits.shape[1]} if labels is None else accuracy_summary(labels, logits, confidence)
    teacher_metrics = {**quality, "params": count_params(teacher),
                       "seconds": run.previous_report.get("teacher", {}).get("seconds")}
    env_file = run.out_dir / "environment.json"
    env = json.loads(env_file.read_text()) if env_file.is_file() else environment()
    return write_report(run.out_dir, run.recipe, data, teacher_metrics, students, scratch, env,
                        teacher_model=teacher, opts=opts)


def evaluate_run(run_dir: str | Path, seed: int | None = None, opts: EvalOptions | None = None,
                 measure_cost: bool = True, recipe_dir: str | Path | None = None,
                 trust_code: bool = False) -> dict[str, Any]:
    """`kdforge eval RUN_DIR`: the full evaluation of one seed's student against the run's teacher (test split).

    Returns:
        {"source": where the models and data came from, "eval_options": ..., **the sections of `evaluate_pair`}.
    """
    from kdforge.evaluate import EvalOptions, evaluate_pair
    from kdforge.models import load_saved_model

    opts = opts or EvalOptions()
    run = open_run(run_dir, recipe_dir, trust_code)
    seed, folder = student_folder(run, seed)
    with trusting(run):
        data = run_data(run)
        _refuse_label_free(data.test, f"run {str(run.out_dir)!r}")
        teacher = run_teacher(run)
        student = load_saved_model(folder, str(folder), run.base_dir, trust_code)[0]
        result = evaluate_pair(teacher, student, data.test, run.recipe.teacher.inputs, run.recipe.student.inputs,
                               opts, num_classes=data.info.num_classes, batch_size=run.recipe.eval.batch_size,
                               measure_cost=measure_cost)
    source = {"run": str(run.out_dir), "seed": seed, "student": str(folder), "split": "test"}
    return {"source": source, "eval_options": _options(opts), **result.sections}


def evaluate_folders(teacher_dir: str | Path, student_dir: str | Path, data_source: str, split: str = "test",
                     opts: EvalOptions | None = None, measure_cost: bool = True,
                     trust_code: bool = False) -> dict[str, Any]:
    """`kdforge eval --teacher DIR --student DIR --data SOURCE`: two saved models on one split of a data source
    (split with the recipe defaults: test_size 0.2, val_size 0.1, split_seed 0)."""
    from kdforge.app.data import load_recipe_data
    from kdforge.evaluate import EvalOptions, evaluate_pair
    from kdforge.models import load_saved_model
    from kdforge.recipe import DataSpec

    opts = opts or EvalOptions()
    splits = ("test", "val", "train")
    if split not in splits:
        raise KDForgeError(f"--split {split!r}: choose one of {', '.join(splits)}.")
    teacher, t_meta = load_saved_model(teacher_dir, "--teacher", Path.cwd(), trust_code)
    student, s_meta = load_saved_model(student_dir, "--student", Path.cwd(), trust_code)
    bundle = load_recipe_data(DataSpec(source=data_source), Path.cwd())
    data = {"test": bundle.test, "val": bundle.val, "train": bundle.teacher_train}[split]
    if data is None:
        raise KDForgeError(f"--split {split}: this data source has no {split} split. Use --split test.")
    _refuse_label_free(data, f"--data {data_source}")
    result = evaluate_pair(teacher, student, data, t_meta["inputs"], s_meta["inputs"], opts,
                           num_classes=bundle.info.num_classes, measure_cost=measure_cost)
    source = {"teacher": str(teacher_dir), "student": str(student_dir), "data": data_source, "split": split}
    return {"source": source, "eval_options": _options(opts), **result.sections}


def _refuse_label_free(data: Any, what: str) -> None:
    """`kdforge eval` certifies top-1 agreement (exact bound, PAC): undefined for embeddings, so say where their
    evaluation is instead of reporting argmax agreement of embedding dimensions."""
    if "labels" not in data.tensors:
        raise KDForgeError(
            f"eval: {what} has no labels (a sentence-embedding run); its agreement and PAC certificate are not "
            "defined. Its embedding fidelity (cosine, Spearman, cost) is in report.json's `embedding` and `cost` "
            "sections (`kdforge report RUN_DIR` recomputes them; from Python: kdforge.evaluate.embedding_evaluation)."
        )


def _options(opts: EvalOptions) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()}
