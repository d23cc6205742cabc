"""PNG plots for the report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kdforge import io  # noqa: E402


def _save(fig: Any, path: Path) -> Path:
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_accuracy(report: dict[str, Any], path: Path) -> Path:
    """Test accuracy of teacher, scratch and distilled student (mean ± std over seeds), and agreement."""
    names, values, errors = ["teacher"], [report["teacher"]["accuracy"]], [0.0]
    if "scratch" in report:
        names.append("scratch student")
        values.append(report["scratch"]["accuracy"])
        errors.append(report["scratch"]["accuracy_std"])
    names.append("distilled student")
    values.append(report["student"]["accuracy"])
    errors.append(report["student"]["accuracy_std"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    bars = left.bar(names, values, yerr=errors, capsize=4, color=["#555555", "#9bb7d4", "#2a6fb0"][-len(names):])
    left.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=8)
    low = min(values) - 3 * max(errors + [0.01])
    left.set_ylim(max(0.0, low - 0.05), 1.0)
    left.set_ylabel("test accuracy")
    left.set_title("Accuracy (mean ± std over seeds)")
    agree = [("distilled", report["student"])] + ([("scratch", report["scratch"])] if "scratch" in report else [])
    labels = [name for name, _ in agree]
    means = [s["agreement"] for _, s in agree]
    lowers = [s["agreement_lower_95"] for _, s in agree]
    right.bar(labels, means, color="#2a6fb0", alpha=0.8, label="agreement (mean)")
    right.scatter(labels, lowers, color="black", marker="_", s=400, label="95% lower bound (weakest seed)")
    right.set_ylim(max(0.0, min(lowers) - 0.05), 1.0)
    right.set_title("Top-1 agreement with teacher")
    right.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(out_dir: Path, seeds: list[int], with_scratch: bool, path: Path) -> Path:
    """Training loss and validation accuracy against optimizer steps, per seed."""
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    kinds = [("student", "#2a6fb0")] + ([("scratch", "#d9822b")] if with_scratch else [])
    for kind, color in kinds:
        for i, seed in enumerate(seeds):
            records = _read_log(out_dir / f"seed-{seed}" / kind / "log.jsonl")
            train = [r for r in records if "train/loss" in r]
            evals = [r for r in records if "val/accuracy" in r]
            label = kind if i == 0 else None
            if train:
                loss_ax.plot([r["step"] for r in train], [r["train/loss"] for r in train], color=color, alpha=0.5,
                             lw=0.8, label=label)
            if evals:
                val_ax.plot([r["step"] for r in evals], [r["val/accuracy"] for r in evals], color=color, alpha=0.8,
                            lw=1.2, label=label)
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_title("training loss (each run's own objective)")
    val_ax.set_xlabel("optimizer step")
    val_ax.set_title("validation accuracy")
    for ax in (loss_ax, val_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)
