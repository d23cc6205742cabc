"""`kdforge tree RECIPE`: distil a teacher into a decision tree and print the rules and the fidelity statement."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def tree_command(
    recipe: Annotated[Path, typer.Argument(help="Tree recipe YAML (see recipes/tree/).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder (default: recipe output_dir).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a value: key.path=value.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
) -> None:
    """Distil a network into an explicit decision tree (LRH / PAC-distillation) and its baselines."""
    from kdforge.trees.recipe import fresh_column, fresh_label, run_tree_recipe

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    report = run_tree_recipe(recipe, out_dir, overwrite, list(overrides or []))
    out = Console()
    table = Table(title=f"kdforge tree: {report['name']} (teacher test accuracy "
                        f"{report['teacher']['test_accuracy']:.2%})")
    fresh = fresh_column(report["sampler"])
    for column in ("method", "leaves", "test fidelity", "95% lower", fresh, "seconds"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, r in report["methods"].items():
        table.add_row(method, str(r["leaves"]), f"{r['test_fidelity']:.2%}", f"{r['test_fidelity_lower']:.2%}",
                      f"{r['fresh_fidelity']:.2%}", f"{r['seconds']:.1f}")
    out.print(table)
    first = next(iter(report["methods"]))
    folder = Path(report["out_dir"]) / first
    out.print((folder / "tree.txt").read_text(), markup=False, highlight=False)
    out.print(f"The {first} tree {report['methods'][first]['statement']}.", markup=False)
    out.print(f"{fresh}: measured {fresh_label(report['sampler']).replace('On ', 'on ', 1)}.", markup=False)
    out.print(f"Output: {report['out_dir']} (tree.txt, tree.json, tree.png, fidelity.txt per method; report.md)")
