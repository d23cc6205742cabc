"""The `kdforge` command line: a thin layer over the Python API. Only this module prints.

User errors (bad recipe, unknown name, missing file, shape mismatch) end with a one-line reason on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from kdforge.errors import KDForgeError

app = typer.Typer(
    name="kdforge",
    help="Knowledge distillation: train a small student to imitate a teacher, and measure how closely it does.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DEMO_RECIPE = "demo_digits.yaml"


def _setup(threads: int | None, quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)], force=True)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _seeds(text: str | None) -> list[str]:
    if text is None:
        return []
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise KDForgeError(f"--seeds {text!r}: give comma-separated integers, e.g. --seeds 0,1,2.") from None
    return [f"seeds={seeds}"]


def _summary_table(title: str, measures: tuple[str, ...]) -> Table:
    """The final table of a run: model, params, then one right-aligned column per measure."""
    table = Table(title=title)
    table.add_column("model", no_wrap=True)
    for column in ("params", *measures):
        table.add_column(column, justify="right")
    return table


def _print_summary(report: dict, out_dir: Path) -> None:
    from kdforge.io import is_writer

    if not is_writer():  # several processes (torchrun, accelerate launch): the main one speaks for the run
        return
    if report.get("task") == "embedding":  # label-free: no accuracy or agreement (kdforge.report.embedding)
        _print_embedding_summary(report, out_dir)
        return
    seeds, n_test = len(report["seeds"]), report["data"]["test"]
    table = _summary_table(f"kdforge: {report['name']}  ({seeds} seed(s), test n={n_test})",
                           ("test accuracy", "agreement w/ teacher", "95% lower bound"))
    t = report["teacher"]
    table.add_row("teacher", f"{t['params']:,}", f"{t['accuracy']:.2%}", "-", "-")
    rows = ([("scratch student", report["scratch"])] if "scratch" in report else []) + [
        ("distilled student", report["student"])]
    for name, s in rows:
        table.add_row(name, f"{s['params']:,}", f"{s['accuracy']:.2%} ± {s['accuracy_std']:.2%}",
                      f"{s['agreement']:.2%}", f"{s['agreement_lower_95']:.2%}")
    out.print(table)
    for entry in report.get("divergence", []) + [e for e in report.get("selection", []) if "message" in e]:
        out.print(f"Warning: {entry['message']}", markup=False, highlight=False, soft_wrap=True)
    if "kd_gain" in report:
        out.print(f"KD gain over scratch: {100 * report['kd_gain']:+.2f} points")
    if "kd_gain_test" in report:  # whether that gap is a result: the paired test on the same test rows
        from kdforge.report.compare import kd_verdict

        out.print(kd_verdict(report["kd_gain_test"]), markup=False, highlight=False, soft_wrap=True)
    _print_evaluation_note(report)
    out.print(f"Report: {out_dir / 'report.html'}  (also report.md, report.json, plots/)", markup=False,
              highlight=False, soft_wrap=True)


def _print_embedding_summary(report: dict, out_dir: Path) -> None:
    """The table of a label-free run: cosine to the teacher's embeddings, Spearman of pairwise similarities,
    and the student's size and speed relative to the teacher (docs/report.md, "Label-free runs")."""
    seeds, n_test = len(report["seeds"]), report["data"]["test"]
    table = _summary_table(f"kdforge: {report['name']}  ({seeds} seed(s), test n={n_test}, no labels)",
                           ("cosine to teacher", "Spearman (pairs)", "MSE"))
    t, s = report["teacher"], report["student"]
    table.add_row("teacher", f"{t['params']:,}", "1 (reference)", "-", "-")
    table.add_row("distilled student", f"{s['params']:,}", f"{_num(s['cosine'])} ± {_num(s['cosine_std'])}",
                  f"{_num(s['spearman'])} ± {_num(s['spearman_std'])}", f"{s['mse']:.3e}")
    out.print(table)
    throughput = report.get("throughput_ratio")
    speed = f", {throughput:.2f}x the teacher's throughput" if throughput else " (throughput not measured)"
    out.print(f"Student: {report['params_ratio']:.3f}x the teacher's parameters{speed}.", markup=False,
              highlight=False, soft_wrap=True)
    _print_evaluation_note(report)
    out.print(f"Report: {out_dir / 'report.html'}  (also report.md, report.json, plots/)", markup=False,
              highlight=False, soft_wrap=True)


def _print_evaluation_note(report: dict) -> None:
    """Why the report lacks its detailed sections: skipped by design, or failed (the report files say it too)."""
    from kdforge.report.embedding_content import evaluation_note

    note = evaluation_note(report)
    if note is not None:
        out.print(note, markup=False, highlight=False, soft_wrap=True)


def _num(x: float | None) -> str:
    """A metric that can be undefined (Spearman of constant similarities is null in report.json)."""
    return "-" if x is None else f"{x:.4f}"


def _without_progress(recipe):
    recipe.train = recipe.train.model_copy(update={"progress": False})
    if recipe.teacher.train is not None:
        recipe.teacher.train = recipe.teacher.train.model_copy(update={"progress": False})
    return recipe


ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="torch CPU threads (default: torch's).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the final table.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-code", help="Import the py: code a run folder or model folder names (only for folders you trust).")]


@app.command()
def distill(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default: recipe output_dir).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out from its checkpoints.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in --out.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a value: key.path=value.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2 (overrides recipe).")] = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the distillation a recipe describes; writes the student(s) and report.{md,json} into the run folder."""
    from kdforge.app.run import run_recipe
    from kdforge.recipe import load_recipe

    _setup(threads, quiet)
    loaded = load_recipe(recipe, overrides=list(overrides or []) + _seeds(seeds))
    if quiet:
        loaded = _without_progress(loaded)
    result = run_recipe(loaded, out_dir=out_dir, resume=resume, overwrite=overwrite)
    _print_summary(result.report, result.out_dir)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/demo"),
    resume: Annotated[bool, typer.Option(help="Continue an interrupted demo.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier demo run in --out.")] = False,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default 0,1,2).")] = None,
    show_recipe: Annotated[bool, typer.Option(help="Print the demo recipe and exit.")] = False,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Distil a CNN teacher into a small MLP on scikit-learn's digits, against a from-scratch baseline."""
    from kdforge.app.run import run_recipe
    from kdforge.recipe import load_recipe

    recipe_file = resources.files("kdforge") / "recipes" / DEMO_RECIPE
    if show_recipe:
        out.print(recipe_file.read_text(), markup=False, highlight=False)
        return
    _setup(threads, quiet)
    with resources.as_file(recipe_file) as path:
        loaded = load_recipe(path, overrides=_seeds(seeds))
    if quiet:
        loaded = _without_progress(loaded)
    result = run_recipe(loaded, out_dir=out_dir, resume=resume, overwrite=overwrite)
    _print_summary(result.report, result.out_dir)


@app.command("list")
def list_names(
    what: Annotated[str, typer.Argument(help="losses | datasets | models")] = "losses",
) -> None:
    """List registered losses (with their papers), built-in datasets or built-in models."""
    from kdforge.data import DATASETS  # importing each package registers its entries
    from kdforge.losses import LOSSES
    from kdforge.models import MODELS
    from kdforge.validation import unknown_name

    registries = {"losses": LOSSES, "datasets": DATASETS, "models": MODELS}
    if what not in registries:
        raise unknown_name("list target", what, registries)
    registry = registries[what]
    table = Table(show_header=True)
    table.add_column("name")
    table.add_column("description")
    if what == "losses":
        table.add_column("paper", overflow="fold")  # links stay whole in narrow terminals
    for name in registry.names():
        entry = registry.get(name)
        info = registry.info(name)
        doc = (entry.__doc__ or "").strip().splitlines()
        summary = info.summary or (doc[0] if doc else "")
        row = [name, summary] + ([info.paper] if what == "losses" else [])
        table.add_row(*row)
    out.print(table)


@app.command()
def inspect(
    spec: Annotated[str, typer.Argument(help="builtin:NAME, py:package.module:attr, hf:DIR, or a saved model dir.")],
    data: Annotated[str, typer.Option(help="Data source that sizes built-in models.")] = "sklearn:digits",
    args: Annotated[str, typer.Option(help="Model arguments as JSON, e.g. '{\"hidden\": [64]}'.")] = "{}",
) -> None:
    """Print a model's module paths (the names `taps:` accepts), their types and parameter counts."""
    from kdforge.app.data import load_recipe_data
    from kdforge.models import build_model, load_saved_model
    from kdforge.recipe import DataSpec

    if Path(spec).is_dir():
        model, _ = load_saved_model(spec, "inspect")
    else:
        try:
            model_args = json.loads(args)
        except json.JSONDecodeError as exc:
            raise KDForgeError(f"--args: not valid JSON ({exc.msg}). Give a JSON object, e.g. "
                               "--args '{\"hidden\": [64]}'.") from None
        info = load_recipe_data(DataSpec(source=data), None).info if spec.startswith("builtin:") else None
        model, _ = build_model(spec, model_args, info, "inspect", base_dir=Path.cwd())
    table = Table("module path", "type", "params")
    for name, module in model.named_modules():
        params = sum(p.numel() for p in module.parameters(recurse=False))
        table.add_row(name or "(root)", type(module).__name__, f"{params:,}" if params else "")
    out.print(table)


EpsilonOpt = Annotated[float, typer.Option(help="Disagreement rate to certify (PAC epsilon).")]
DeltaOpt = Annotated[float, typer.Option(help="One minus the confidence of that certificate (PAC delta).")]


def _print_evaluation(result: dict) -> None:
    f, pac = result["fidelity"], result["fidelity"]["pac"]
    seed = result.get("source", {}).get("seed")
    which = f"seed {seed} student, " if seed is not None else ""
    table = Table(title=f"kdforge eval  ({which}{result.get('source', {}).get('split', 'test')} n={f['n']})")
    table.add_column("measure", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_row("top-1 agreement", f"{f['agreement']:.2%} [{f['agreement_lower']:.2%}, {f['agreement_upper']:.2%}]")
    table.add_row("95% lower bound (one-sided)", f"{f['agreement_lower_95']:.2%}")
    table.add_row("KL(teacher || student) / JS", f"{f['kl']:.4f} / {f['js']:.4f} nats")
    table.add_row("probability loyalty", f"{f['probability_loyalty']:.4f}")
    table.add_row("top-k overlap", ", ".join(f"k={k}: {v:.2%}" for k, v in f["top_k_overlap"].items()))
    if "accuracy" in result:
        acc = result["accuracy"]
        table.add_row("accuracy teacher / student",
                      f"{acc['teacher']['accuracy']:.2%} / {acc['student']['accuracy']:.2%}")
        cal = result["calibration"]
        table.add_row("ECE teacher / student", f"{cal['teacher']['ece']:.4f} / {cal['student']['ece']:.4f}")
    rob = result["robustness"]
    if rob.get("available", True):
        table.add_row("agreement under perturbation", f"{rob['agreement_perturbed']['rate']:.2%}")
    cost = result.get("cost", {})
    if cost.get("speedup"):
        table.add_row("median-latency speed-up", ", ".join(f"b={k}: {v:.1f}x" for k, v in cost["speedup"].items()))
    out.print(table)
    out.print(f"PAC (epsilon={pac['epsilon']:g}, delta={pac['delta']:g}): {pac['verdict']} Needed: "
              f"{pac['n_needed_exact_min']:,} (exact, no disagreement), {pac['n_needed_hoeffding']:,} (Hoeffding); "
              f"this set has {pac['n']:,}.", markup=False, highlight=False, soft_wrap=True)


@app.command("eval")
def eval_command(
    run_dir: Annotated[Path | None, typer.Argument(help="Run folder (or give --teacher, --student, --data).")] = None,
    teacher: Annotated[Path | None, typer.Option(help="Saved teacher model folder.")] = None,
    student: Annotated[Path | None, typer.Option(help="Saved student model folder.")] = None,
    data: Annotated[str | None, typer.Option(help="Data source for --teacher/--student, e.g. sklearn:digits.")] = None,
    split: Annotated[str, typer.Option(help="Split of --data: test, val or train.")] = "test",
    seed: Annotated[int | None, typer.Option(help="Seed of the run's student (default: the report's).")] = None,
    epsilon: EpsilonOpt = 0.01,
    delta: DeltaOpt = 0.05,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the full evaluation here.")] = None,
    cost: Annotated[bool, typer.Option(help="Measure parameters, size and latency.")] = True,
    require_certified: Annotated[bool, typer.Option(
        help="Exit 1 unless disagreement <= epsilon is certified; exit 2 if the set is too small to ever be.")] \
        = False,
    trust_code: TrustOpt = False,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate how closely a student imitates its teacher, and whether the set certifies (epsilon, delta)."""
    from kdforge import io
    from kdforge.evaluate import EvalOptions
    from kdforge.report.run import evaluate_folders, evaluate_run

    _setup(threads, quiet)
    opts = EvalOptions(epsilon=epsilon, delta=delta)
    if run_dir is not None:
        if teacher or student or data:
            raise KDForgeError("eval: give either RUN_DIR or --teacher/--student/--data, not both.")
        result = evaluate_run(run_dir, seed, opts, measure_cost=cost, trust_code=trust_code)
    elif teacher and student and data:
        result = evaluate_folders(teacher, student, data, split, opts, measure_cost=cost, trust_code=trust_code)
    else:
        raise KDForgeError("eval: give a run folder (kdforge eval runs/demo), or all of --teacher DIR, "
                           "--student DIR and --data SOURCE.")
    pac = result["fidelity"]["pac"]
    if require_certified and pac["n"] < pac["n_needed_exact_min"]:  # no outcome could certify: a user error
        raise KDForgeError(
            f"eval: the evaluation set has {pac['n']} samples; certifying disagreement <= {pac['epsilon']:g} with "
            f"confidence {1 - pac['delta']:g} needs at least {pac['n_needed_exact_min']} even with zero "
            "disagreements. Evaluate on a larger set (--data/--split), or relax --epsilon/--delta."
        )
    _print_evaluation(result)
    if json_path is not None:
        io.write_json(json_path, result)
        out.print(f"Evaluation: {json_path}", markup=False, highlight=False)
    if require_certified and not pac["certified"]:
        raise typer.Exit(1)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder kdforge distill wrote.")],
    recipe_dir: Annotated[Path | None, typer.Option(help="Folder of the original recipe (for py: models).")] = None,
    epsilon: EpsilonOpt = 0.01,
    delta: DeltaOpt = 0.05,
    trust_code: TrustOpt = False,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Rebuild report.json, report.md, report.html and plots of a finished run (in RUN_DIR) from its saved models."""
    from kdforge.evaluate import EvalOptions
    from kdforge.io import output_target
    from kdforge.report.run import open_run, regenerate_report

    _setup(threads, quiet)
    confidence = open_run(run_dir, recipe_dir, trust_code).recipe.eval.confidence
    # the report is written into RUN_DIR (there is no --out): a failed write says so
    with output_target("RUN_DIR (kdforge report writes into the run folder: copy it somewhere writable)"):
        result = regenerate_report(run_dir, recipe_dir, EvalOptions(confidence=confidence, epsilon=epsilon,
                                                                    delta=delta), trust_code=trust_code)
    _print_summary(result, run_dir)
    # a label-free run has no PAC verdict (its fidelity is the cosine table above), nor has a failed evaluation
    pac = result.get("fidelity", {}).get("pac")
    if pac:
        out.print(f"PAC: {pac['verdict']}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run folder kdforge distill wrote.")],
    fmt: Annotated[str, typer.Option("--format", help="safetensors, or onnx (needs kdforge[onnx]).")] = "safetensors",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder (default: RUN_DIR/export/FORMAT).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the student (default: the report's).")] = None,
    scratch: Annotated[bool, typer.Option(help="Export the from-scratch baseline instead.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    trust_code: TrustOpt = False,
) -> None:
    """Export the student alone (no teacher, adapters or loss parts), checked against PyTorch on test inputs."""
    from kdforge.export import export_student
    from kdforge.report.run import open_run

    # else the "finish with --resume" message misleads
    if scratch and not open_run(run_dir, trust_code=trust_code).recipe.baseline:
        raise KDForgeError(f"export --scratch: {str(run_dir)!r} has no scratch baseline (its recipe has `baseline: "
                           "false`, as every label-free run does). Drop --scratch to export the distilled student.")
    result = export_student(run_dir, fmt, out_dir, seed, "scratch" if scratch else "student", overwrite,
                            trust_code=trust_code)
    out.print(f"Exported {result.info['source']['kind']} of seed {result.info['source']['seed']} as {fmt}: "
              f"{result.out_dir}  ({', '.join(result.files)}); check: {result.info['check']}, max |diff| "
              f"{result.max_abs_diff:.2g} on {result.info['check_rows']} test rows.", markup=False, highlight=False,
              soft_wrap=True)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="First run folder (A).")],
    run_b: Annotated[Path, typer.Argument(help="Second run folder (B), tested on the same rows.")],
    scratch: Annotated[bool, typer.Option(help="Compare the runs' scratch baselines instead of their students.")]
    = False,
    confidence: Annotated[float | None, typer.Option(
        help="1 - the test's level (default: run A's eval.confidence, 0.95: level 0.05).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the comparison here.")] = None,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Is run A's student more accurate than run B's? Exact McNemar test on the same test rows, seeds summed."""
    from kdforge import io
    from kdforge.report.comparison import compare_runs

    _setup(threads, quiet)
    if confidence is not None and not 0.0 < confidence < 1.0:
        raise KDForgeError(f"--confidence {confidence!r}: give a value in (0, 1), e.g. 0.95.")
    result = compare_runs(run_a, run_b, "scratch" if scratch else "student", confidence)
    table = Table(title=f"kdforge compare  ({result['seeds']} seed pair(s), {result['rows']:,} test rows each)")
    for column in ("seed A", "seed B", "accuracy A", "accuracy B", "A right, B wrong", "B right, A wrong", "p"):
        table.add_column(column, justify="right")
    for s in result["per_seed"]:
        table.add_row(str(s["seed_a"]), str(s["seed_b"]), f"{s['accuracy_a']:.2%}", f"{s['accuracy_b']:.2%}",
                      str(s["a_only"]), str(s["b_only"]), f"{s['p_value']:.3g}")
    out.print(table)
    out.print(result["verdict"], markup=False, highlight=False, soft_wrap=True)
    if json_path is not None:
        io.write_json(json_path, result)
        out.print(f"Comparison: {json_path}", markup=False, highlight=False)


from kdforge.tree_cli import tree_command  # noqa: E402  (issue 10: `kdforge tree RECIPE`)

app.command("tree")(tree_command)


@app.command()
def cache(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file whose teacher has weights.")],
    cache_dir: Annotated[Path | None, typer.Option("--dir", help="Store folder (default: teacher.cache.dir).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a value: key.path=value.")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Rebuild the whole store: a damaged one, or one built for another teacher or data.")] = False,
    threads: ThreadsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the teacher once over the recipe's data and store its outputs (resumes an interrupted build)."""
    from kdforge.app.teacher import cache_recipe
    from kdforge.recipe import load_recipe

    _setup(threads, quiet)
    info = cache_recipe(load_recipe(recipe, overrides=list(overrides or [])), cache_dir, overwrite=overwrite)
    rows = ", ".join(f"{name} {n}" for name, n in info.rows.items())
    out.print(f"teacher cache {info.status}: {info.directory}  ({rows} rows, {info.bytes / 2**20:.2f} MiB)",
              markup=False, highlight=False, soft_wrap=True)


@app.command()
def doctor(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file of a language-model distillation.")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a value: key.path=value.")] = None,
) -> None:
    """Compare the teacher's and the student's tokenizers and chat templates: which distillation applies (identical,
    padded, superset, foreign vocabulary) and what to fix. Exit 0 when fine, 2 with one line per problem."""
    from kdforge.app.doctor import diagnose
    from kdforge.recipe import load_recipe

    result = diagnose(load_recipe(recipe, overrides=list(overrides or [])))
    for finding in result.findings:
        prefix = "" if finding.level == "info" else f"{finding.level}: "
        out.print(f"{prefix}{finding.message}", markup=False, highlight=False, soft_wrap=True)
    if result.problems:
        raise typer.Exit(2)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line and exit 2."""
    try:
        app(args=argv, prog_name="kdforge")
    except KDForgeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        err.print(f"error: {'; '.join(lines)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a write that met a full or failing disk outside kdforge.io (a library's own writer)
        from kdforge.io import DISK_ERRNOS, os_error

        if exc.errno not in DISK_ERRNOS:
            raise
        err.print(f"error: {os_error(exc, exc.filename or 'a file')}", markup=False, highlight=False,
                  soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; resume with --resume", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
