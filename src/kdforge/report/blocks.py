"""The vocabulary every report section is written in (blocks and their number formats), and the Cost section
that classification and label-free reports share.

Blocks: ("p", text) a paragraph (inline `code` allowed), ("table", header, rows, align) with align a string of
'l'/'r' per column, ("img", relative path, caption).
"""

from __future__ import annotations

from typing import Any

Block = tuple
Section = tuple[str, list[Block]]


# One sentence per plot: the caption under it in report.html and its alt text in report.md.
PLOT_CAPTIONS = {
    "plots/accuracy.png": "Test accuracy of the teacher and the students (mean ± std over seeds, axis from 0), and "
                          "each student's top-1 agreement with the teacher with the weakest seed's 95% lower bound.",
    "plots/curves.png": "Training loss (log scale) and the validation score against optimizer steps, for every "
                        "seed of each student.",
    "plots/agreement.png": "Top-1 agreement with the teacher in bins of the teacher's confidence, with the share of "
                           "test rows in each bin.",
    "plots/reliability.png": "Reliability diagrams: accuracy against confidence in equal-width bins for each model, "
                             "with its expected calibration error; the dashed diagonal is perfect calibration.",
    "plots/confusion.png": "Teacher predictions (rows) against student predictions (columns) on the test rows, and "
                           "each class's accuracy for both models with their agreement.",
    "plots/explanations.png": "A few test inputs with the teacher's and the student's explanation maps (Grad-CAM++ "
                              "and gradient saliency) for the teacher's predicted class.",
    "plots/cost.png": "Parameters and size on disk (log scale), and the median latency of a batch against batch size "
                      "with a bar up to the 95th percentile, teacher against student.",
    "plots/cosines.png": "Histogram of each test sentence's cosine between the student's and the teacher's "
                         "embedding, with the mean and the 5th percentile.",
}


def caption(path: str) -> str:
    """The sentence under a plot (a generic one for a plot without its own)."""
    return PLOT_CAPTIONS.get(path, f"Figure {path.rsplit('/', 1)[-1].rsplit('.', 1)[0]!r} of this run.")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ms(x: float) -> str:
    return f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms"


def _size(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024**2 else f"{n / 1024**2:,.2f} MiB"


def _cost_section(cost: dict[str, Any] | None) -> list[Section]:
    """The Cost section of any report: the timings, why they were not measured, or none without `cost`."""
    if cost is None:
        return []
    if cost.get("available", True) is False:
        return [("Cost", [("p", f"Not measured: {cost['reason']}.")])]
    return [("Cost", _cost_blocks(cost))]


def _cost_blocks(cost: dict[str, Any]) -> list[Block]:
    rows = []
    for name in ("teacher", "student"):
        c = cost[name]
        for a in c["latency"]:
            rows.append([name, f"{c['params']:,}", _size(c["size_bytes"]), str(a["batch_size"]), _ms(a["p50_ms"]),
                         _ms(a["p95_ms"]), f"{a['throughput']:,.0f}"])
    speed = ", ".join(f"batch {k}: {v:.1f}x" for k, v in cost["speedup"].items() if v)
    load = f" at load average {cost['load_average']:.1f}" if cost.get("load_average") is not None else ""
    return [
        ("p", f"The student has {cost['params_ratio']:.1f}x fewer parameters and {cost['size_ratio']:.1f}x "
              f"smaller weights (safetensors). Median-latency speed-up: {speed}. Measured on {cost['device']} "
              f"with {cost['threads']} thread(s){load}, teacher and student interleaved; timings vary with load."),
        ("table", ["model", "params", "size on disk", "batch", "p50", "p95", "rows/s"], rows, "lrrrrrr"),
        ("img", "plots/cost.png", caption("plots/cost.png")),
    ]
