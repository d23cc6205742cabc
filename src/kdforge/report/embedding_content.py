"""What report.md / report.html say about a label-free run (sentence-embedding distillation)."""

from __future__ import annotations

from typing import Any

from kdforge.report.blocks import Block, Section, _cost_section, caption


def evaluation_note(report: dict[str, Any]) -> str | None:
    """One sentence on the detailed evaluation when a report lacks it: skipped by design (`evaluation_skipped`,
    e.g. teacher and student with different tokenizers) or failed (`evaluation_error`); None when it ran. The
    report files and the CLI's summary say it alike."""
    if "evaluation_skipped" in report:
        return f"The detailed evaluation was not run: {report['evaluation_skipped']}."
    if "evaluation_error" in report:
        return f"The detailed evaluation failed: {report['evaluation_error']}."
    return None


def embedding_sections(report: dict[str, Any]) -> list[Section]:
    """What report.md / report.html say about a label-free run."""
    data, teacher, student = report["data"], report["teacher"], report["student"]
    intro = (
        f"Data: `{data['source']}`: {data['train']} training sentences, {data['val']} validation, {data['test']} "
        f"test, no labels; embedding width {data['dim']}. Losses: "
        + ", ".join(f"`{t['name']}` x{t['weight']:g}" for t in report["losses"]) + f". Seeds: {report['seeds']}."
    )
    rows = [["teacher", f"{teacher['params']:,}", "1 (reference)", "-", "-", "-"],
            ["distilled student", f"{student['params']:,}",
             f"{_num(student['cosine'])} ± {_num(student['cosine_std'])}", _num(student["cosine_p05"]),
             f"{_num(student['spearman'])} ± {_num(student['spearman_std'])}", f"{student['mse']:.3e}"]]
    summary: list[Block] = [
        ("p", intro),
        ("table", ["model", "params", "test cosine to teacher (mean ± std)", "5th percentile cosine",
                   "Spearman of pairwise similarities", "MSE"], rows, "lrrrrr"),
    ]
    if "cosine_last" in student:
        summary.append(("p", f"Best-validation vs last-step test cosine (mean over seeds): {_num(student['cosine'])} "
                             f"vs {_num(student['cosine_last'])}."))
    fidelity: list[Block] = [(
        "p",
        f"On the {data['test']} held-out test sentences the distilled student's embedding has mean cosine "
        f"{_num(student['cosine'])} to the teacher's (5th percentile {_num(student['cosine_p05'])}, worst sentence "
        f"{_num(student['cosine_min'])}), and it ranks sentence pairs by similarity like the teacher with Spearman "
        f"rho {_num(student['spearman'])} (1 = the same order). The data has no labels, so accuracy, top-1 "
        "agreement and a scratch baseline do not apply.",
    )]
    emb = report.get("embedding")
    if emb is not None:
        fidelity.append(("p", f"The seed-{report['evaluated_seed']} student (lowest mean cosine) in detail: cosine "
                              f"{_num(emb['cosine'])} ± {_num(emb['cosine_std'])} (std over sentences), Spearman "
                              f"over {emb['pairs']:,} pairs of the first {min(emb['n'], _pair_rows(emb['pairs'])):,} "
                              "test sentences."))
        fidelity.append(("img", "plots/cosines.png", caption("plots/cosines.png")))
    ratios = f"The student has {report['params_ratio']:.3f}x the teacher's parameters"
    if report.get("throughput_ratio"):
        ratios += f" and encodes {report['throughput_ratio']:.2f}x as many sentences per second"
    fidelity.append(("p", ratios + "."))
    note = evaluation_note(report)
    if note is not None:
        fidelity.append(("p", note))
    sections: list[Section] = [("Summary", summary), ("Embedding fidelity", fidelity),
                               *_cost_section(report.get("cost"))]
    header = ["seed", "cosine", "5th percentile", "min", "Spearman", "MSE", "steps (best)"]
    per_seed = [[str(m["seed"]), _num(m["cosine"]), _num(m["cosine_p05"]), _num(m["cosine_min"]),
                 _num(m["spearman"]), f"{m['mse']:.3e}", f"{m.get('steps', '-')} ({m.get('best_step', '-')})"]
                for m in student["per_seed"]]
    sections.append(("Per seed", [("table", header, per_seed, "rrrrrrr")]))
    return sections


def _pair_rows(pairs: int) -> int:
    """The n with n(n-1)/2 = pairs."""
    return round((1 + (1 + 8 * pairs) ** 0.5) / 2)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
