"""report.html: one self-contained file (plots embedded as base64 PNG, inline CSS, no scripts, no network)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from kdforge.report.blocks import caption
from kdforge.report.content import environment_line, summary_sections

CSS = """
body{font:15px/1.5 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1020px;margin:2em auto;padding:0 1em;
color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ddd;padding:.25em .6em}
th{background:#f4f6f8}td.r,th.r{text-align:right}code{background:#f2f2f2;padding:0 .25em;border-radius:3px}
figure{margin:.8em 0}figure img{max-width:100%}figcaption{color:#666;font-size:.85em}
nav a{margin-right:.8em}footer{color:#777;font-size:.85em;margin-top:2em}
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _image(out_dir: Path, path: str, caption: str) -> str:
    file = out_dir / path
    if not file.is_file():
        return f"<p><em>plot {html.escape(path)} missing</em></p>"
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    mime = "image/svg+xml" if file.suffix == ".svg" else "image/png"
    return (f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(header: list[str], rows: list[list[str]], align: str) -> str:
    cls = ['class="r"' if a == "r" else "" for a in align]
    head = "".join(f"<th {c}>{_inline(h)}</th>" for h, c in zip(header, cls, strict=True))
    body = "".join("<tr>" + "".join(f"<td {c}>{_inline(v)}</td>" for v, c in zip(row, cls, strict=True)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any], out_dir: Path) -> str:
    """The report as one HTML page; every plot under `out_dir` is embedded, so the file can be mailed alone."""
    sections = summary_sections(report)
    shown = {b[1] for _, blocks in sections for b in blocks if b[0] == "img"}
    rest = [p for p in report.get("plots", []) if p not in shown]
    if rest:
        sections.append(("Plots", [("img", p, caption(p)) for p in rest]))
    nav = " ".join(f'<a href="#{_slug(t)}">{html.escape(t)}</a>' for t, _ in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>kdforge report: {html.escape(report['name'])}</title><style>{CSS}</style></head><body>",
        f'<h1 id="report-title">kdforge report: {html.escape(report["name"])}</h1>',
        f"<nav>{nav}</nav>",
    ]
    for title, blocks in sections:
        parts.append(f'<section id="{_slug(title)}"><h2>{html.escape(title)}</h2>')
        for block in blocks:
            if block[0] == "p":
                parts.append(f"<p>{_inline(block[1])}</p>")
            elif block[0] == "table":
                parts.append(_table(block[1], block[2], block[3]))
            elif block[0] == "img":
                parts.append(_image(out_dir, block[1], block[2]))
        parts.append("</section>")
    parts += [f"<footer>{_inline(environment_line(report))}</footer>", "</body></html>", ""]
    return "\n".join(parts)
