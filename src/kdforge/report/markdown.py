"""report.md: the numbers a reader needs to decide whether the student can replace the teacher."""

from __future__ import annotations

from typing import Any

from kdforge.report.blocks import caption
from kdforge.report.content import environment_line, summary_sections


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """The report as GitHub-flavoured markdown; images link to the PNGs in plots/."""
    lines = [f"# kdforge report: {report['name']}", ""]
    for i, (title, blocks) in enumerate(summary_sections(report)):
        if i:
            lines += [f"## {title}", ""]
        for block in blocks:
            if block[0] == "p":
                lines += [block[1], ""]
            elif block[0] == "table":
                lines += _table(block[1], block[2], block[3]) + [""]
            elif block[0] == "img":
                lines += [f"![{block[2]}]({block[1]})", ""]
    shown = {b[1] for _, blocks in summary_sections(report) for b in blocks if b[0] == "img"}
    rest = [p for p in report.get("plots", []) if p not in shown]
    if rest:
        lines += ["## Plots", ""] + [f"![{caption(p)}]({p})" for p in rest] + [""]
    lines += [environment_line(report), ""]
    return "\n".join(lines)
