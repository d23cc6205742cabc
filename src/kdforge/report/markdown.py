"""report.md: the numbers a reader needs to decide whether the student can replace the teacher."""

from __future__ import annotations

from typing import Any


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render_markdown(report: dict[str, Any]) -> str:
    data, teacher, student = report["data"], report["teacher"], report["student"]
    scratch = report.get("scratch")
    n_seeds = len(report["seeds"])
    lines = [
        f"# kdforge report: {report['name']}",
        "",
        f"Data: `{data['source']}`: {data['train']} training samples ({data['student_labelled']} labelled for the "
        f"student, {data['student_train']} inputs it trains on), {data['val']} validation, {data['test']} test, "
        f"{data['num_classes']} classes. Losses: "
        + ", ".join(f"`{t['name']}` x{t['weight']:g}" for t in report["losses"]) + f". Seeds: {report['seeds']}.",
        "",
        "| model | params | test accuracy (mean ± std) | agreement with teacher | 95% lower bound |",
        "|---|---:|---:|---:|---:|",
        f"| teacher | {teacher['params']:,} | {_pct(teacher['accuracy'])} | - | - |",
    ]
    if scratch:
        lines.append(
            f"| scratch student | {scratch['params']:,} | "
            f"{_pct(scratch['accuracy'])} ± {_pct(scratch['accuracy_std'])}"
            f" | {_pct(scratch['agreement'])} | {_pct(scratch['agreement_lower_95'])} |"
        )
    lines.append(
        f"| distilled student | {student['params']:,} | {_pct(student['accuracy'])} ± {_pct(student['accuracy_std'])}"
        f" | {_pct(student['agreement'])} | {_pct(student['agreement_lower_95'])} |"
    )
    lines += ["", "## Fidelity", ""]
    n_test = data["test"]
    lines.append(
        f"With 95% confidence, every distilled student here agrees with the teacher's top-1 prediction on at least "
        f"{_pct(student['agreement_lower_95'])} of inputs drawn like the {n_test} test samples "
        f"(one-sided exact Clopper-Pearson bound; the weakest of {n_seeds} seed(s))."
    )
    if scratch:
        gain = report["kd_gain"]
        verdict = "helps" if gain > 0 else "does not help"
        lines += ["", f"Distillation {verdict} here: {100 * gain:+.2f} accuracy points over the same student "
                      "trained from scratch with the same optimizer steps, batch size and seeds."]
    lines += ["", "## Per seed", "", "| seed | run | accuracy | 95% interval | agreement | 95% lower bound |",
              "|---:|---|---:|---|---:|---:|"]
    runs = [("distilled", student)] + ([("scratch", scratch)] if scratch else [])
    for name, summary in runs:
        for m in summary["per_seed"]:
            lines.append(
                f"| {m['seed']} | {name} | {_pct(m['accuracy'])} | [{_pct(m['accuracy_lower'])}, "
                f"{_pct(m['accuracy_upper'])}] | {_pct(m['agreement'])} | {_pct(m['agreement_lower_95'])} |"
            )
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report.get("plots", [])]
    env = report["environment"]
    lines += ["", f"kdforge {env['kdforge']}, torch {env['torch']}, Python {env['python']}, "
                  f"{env['torch_threads']} thread(s), CUDA: {env['cuda']}.", ""]
    return "\n".join(lines)
