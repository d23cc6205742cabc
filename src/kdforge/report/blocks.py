"""The vocabulary every report section is written in (blocks and their number formats), and the Cost section
that classification and label-free reports share.

Blocks: ("p", text) a paragraph (inline `code` allowed), ("table", header, rows, align) with align a string of
'l'/'r' per column, ("img", relative path, caption).
"""

from __future__ import annotations

from typing import Any

Block = tuple
Section = tuple[str, list[Block]]


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
        ("img", "plots/cost.png", "cost"),
    ]
