"""PNG plots for the report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdforge import io


def _pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, loaded when the first plot is drawn: importing the report (or the
    Python API, which can write one) stays cheap for callers that never plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_accuracy(report: dict[str, Any], path: Path) -> Path:
    """Test accuracy of teacher, scratch and distilled student (mean ± std over seeds), and agreement."""
    plt = _pyplot()
    names, values, errors = ["teacher"], [report["teacher"]["accuracy"]], [0.0]
    if "scratch" in report:
        names.append("scratch student")
        values.append(report["scratch"]["accuracy"])
        errors.append(report["scratch"]["accuracy_std"])
    names.append("distilled student")
    values.append(report["student"]["accuracy"])
    errors.append(report["student"]["accuracy_std"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [3, 2]},
                                   layout="constrained")
    bars = left.bar(names, values, yerr=errors, capsize=4, color=["#555555", "#9bb7d4", "#2a6fb0"][-len(names):])
    left.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=8)
    left.set_ylim(0.0, 1.15)  # from 0: a gap looks as large as it is; headroom keeps the labels off the title
    left.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    left.set_ylabel("test accuracy")
    left.set_title("Accuracy (mean ± std over seeds)")
    agree = [("distilled", report["student"])] + ([("scratch", report["scratch"])] if "scratch" in report else [])
    labels = [name for name, _ in agree]
    means = [s["agreement"] for _, s in agree]
    lowers = [s["agreement_lower_95"] for _, s in agree]
    right.bar(labels, means, color="#2a6fb0", alpha=0.8, label="agreement (mean)")
    right.scatter(labels, lowers, color="black", marker="_", s=400, label="95% lower bound (weakest seed)")
    right.set_ylim(0.0, 1.15)
    right.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    right.set_title("Top-1 agreement with teacher")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)  # below: never on a bar
    return _save(fig, path)


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(out_dir: Path, seeds: list[int], with_scratch: bool, path: Path,
                val_key: str = "val/accuracy") -> Path:
    """Training loss and the validation metric `val_key` (accuracy; cosine to the teacher for embeddings)
    against optimizer steps, per seed."""
    plt = _pyplot()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    kinds = [("student", "#2a6fb0")] + ([("scratch", "#d9822b")] if with_scratch else [])
    for kind, color in kinds:
        for i, seed in enumerate(seeds):
            records = _read_log(out_dir / f"seed-{seed}" / kind / "log.jsonl")
            train = [r for r in records if "train/loss" in r]
            evals = [r for r in records if val_key in r]
            label = kind if i == 0 else None
            if train:
                loss_ax.plot([r["step"] for r in train], [r["train/loss"] for r in train], color=color, alpha=0.5,
                             lw=0.8, label=label)
            if evals:
                val_ax.plot([r["step"] for r in evals], [r[val_key] for r in evals], color=color, alpha=0.8,
                            lw=1.2, label=label)
    loss_ax.set_yscale("log")
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_title("training loss (each run's own objective)")
    val_ax.set_xlabel("optimizer step")
    val_ax.set_title("validation " + val_key.removeprefix("val/").replace("cosine", "cosine to teacher"))
    for ax in (loss_ax, val_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_agreement_confidence(bins: list[dict[str, Any]], path: Path) -> Path:
    """Top-1 agreement per bin of teacher confidence, with each bin's share of the rows."""
    plt = _pyplot()
    used = [b for b in bins if b["count"]]
    fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
    centers = [(b["lower"] + b["upper"]) / 2 for b in used]
    width = (bins[0]["upper"] - bins[0]["lower"]) * 0.9
    ax.bar(centers, [b["accuracy"] for b in used], width=width, color="#2a6fb0", alpha=0.85, label="agreement")
    total = sum(b["count"] for b in used)
    share = ax.twinx()
    share.plot(centers, [b["count"] / total for b in used], color="#d9822b", marker="o", lw=1, label="share of rows")
    share.set_ylabel("share of rows", color="#d9822b")
    share.set_ylim(0, 1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("teacher confidence (max softmax probability)")
    ax.set_ylabel("top-1 agreement")
    ax.set_title("Agreement with the teacher vs its confidence")
    return _save(fig, path)


def plot_reliability(calibration: dict[str, Any], path: Path) -> Path:
    """Reliability diagrams (accuracy vs confidence per bin) of each model, with its ECE."""
    plt = _pyplot()
    names = [n for n in ("teacher", "student", "scratch") if n in calibration]
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names), 3.5), squeeze=False,
                             layout="constrained")
    colors = {"teacher": "#555555", "student": "#2a6fb0", "scratch": "#d9822b"}
    for ax, name in zip(axes[0], names, strict=True):
        bins = calibration[name]["bins"]
        width = bins[0]["upper"] - bins[0]["lower"]
        used = [b for b in bins if b["count"]]
        ax.bar([b["lower"] for b in used], [b["accuracy"] for b in used], width=width, align="edge",
               color=colors[name], alpha=0.8, edgecolor="white", label="accuracy")
        ax.plot([0, 1], [0, 1], ls="--", color="black", lw=0.8, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{name}: ECE {calibration[name]['ece']:.3f}", fontsize=10)
    axes[0][0].set_ylabel("accuracy")
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=7, loc="outside lower center", ncols=2)
    return _save(fig, path)


def plot_confusion(matrix: list[list[int]], per_class: list[dict[str, Any]] | None, path: Path,
                   class_names: list[str] | None = None) -> Path:
    """Teacher-vs-student prediction counts, and per-class accuracy of both with their agreement; axes carry the
    class names when the data has them."""
    plt = _pyplot()
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    ncols = 2 if per_class else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.4), squeeze=False, layout="constrained")
    ax = axes[0][0]
    shown = np.where(counts > 0, np.log10(counts + 1), np.nan)
    ax.imshow(shown, cmap="Blues")
    k = counts.shape[0]
    if k <= 20:
        names = class_names if class_names is not None and len(class_names) == k else [str(i) for i in range(k)]
        turn = {"rotation": 45, "ha": "right"} if class_names is not None else {}
        ax.set_xticks(range(k), names, **turn)
        ax.set_yticks(range(k), names)
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if i == j else "#b22222")
    ax.set_xlabel("student prediction")
    ax.set_ylabel("teacher prediction")
    ax.set_title("Teacher vs student predictions (off-diagonal: disagreements)", fontsize=9)
    if per_class:
        bx = axes[0][1]
        classes = [r["class"] for r in per_class]
        x = np.arange(len(classes))
        bx.bar(x - 0.27, [r["teacher_accuracy"] for r in per_class], 0.27, color="#555555", label="teacher acc.")
        bx.bar(x, [r["student_accuracy"] for r in per_class], 0.27, color="#2a6fb0", label="student acc.")
        bx.bar(x + 0.27, [r["agreement"] for r in per_class], 0.27, color="#6bbf59", label="agreement")
        turn = {"rotation": 45, "ha": "right"} if any("name" in r for r in per_class) else {}
        bx.set_xticks(x, [str(r.get("name", r["class"])) for r in per_class], **turn)
        bx.set_ylim(0.0, 1.05)  # from 0, as every bar chart here
        bx.set_xlabel("true class")
        bx.set_title("Per class", fontsize=9)
        # below the whole figure: under the axes it would sit on the (rotated, named) tick labels
        fig.legend(*bx.get_legend_handles_labels(), fontsize=7, loc="outside lower right", ncols=3)
    return _save(fig, path)


def plot_explanations(maps: dict[str, Any], path: Path, n: int = 8) -> Path:
    """A few inputs with the teacher's and the student's explanation maps for the teacher's class.

    Each row is one mosaic (one image per input, each scaled to its own [0, 1]), drawn with a single imshow.
    """
    plt = _pyplot()
    import numpy as np

    rows = [("input", "input")]
    if "gradcam_teacher" in maps:
        rows.append(("gradcam_teacher", "teacher Grad-CAM++"))
    if "gradcam_student" in maps:
        rows.append(("gradcam_student", "student Grad-CAM++"))
    rows += [("saliency_teacher", "teacher saliency"), ("saliency_student", "student saliency")]
    count = min(n, len(maps["input"]))
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.3 * count, 1.35 * len(rows)), squeeze=False,
                             layout="constrained")
    for ax, (key, label) in zip(axes[:, 0], rows, strict=True):
        tiles = []
        for c in range(count):
            image = maps[key][c].detach().cpu().double()
            image = (image.mean(dim=0) if key == "input" else image).numpy()
            span = image.max() - image.min()
            tiles.append((image - image.min()) / span if span > 0 else np.zeros_like(image))
            tiles.append(np.full((image.shape[0], 1), np.nan))  # a gap between inputs
        ax.imshow(np.concatenate(tiles[:-1], axis=1), cmap="gray" if key == "input" else "inferno",
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Where each model looks (class: the teacher's prediction; each map scaled to its own range)",
                 fontsize=9)
    return _save(fig, path)


def plot_cost(cost: dict[str, Any], path: Path) -> Path:
    """Parameters, size on disk and median latency per batch size, teacher vs student (log scales)."""
    plt = _pyplot()
    import numpy as np

    fig, (size_ax, lat_ax) = plt.subplots(1, 2, figsize=(9.5, 3.8), gridspec_kw={"width_ratios": [2, 3]},
                                         layout="constrained")
    names = [n for n in ("teacher", "student") if n in cost]
    colors = {"teacher": "#555555", "student": "#2a6fb0"}
    x = np.arange(2)
    for i, name in enumerate(names):
        values = [cost[name]["params"], cost[name]["size_bytes"] / 1024]
        bars = size_ax.bar(x + (i - 0.5) * 0.38, values, 0.38, color=colors[name], label=name)
        size_ax.bar_label(bars, labels=[f"{v:,.0f}" if v >= 10 else f"{v:.2g}" for v in values], fontsize=7,
                          padding=2)
    size_ax.set_xticks(x, ["parameters", "size on disk (KiB)"])
    size_ax.set_yscale("log")
    low, high = size_ax.get_ylim()
    size_ax.set_ylim(low, high * 8)  # headroom: the bar labels stay inside the axes, under the title
    size_ax.set_title("Size", fontsize=10)
    size_ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)
    for name in names:
        lat = cost[name]["latency"]
        sizes = [a["batch_size"] for a in lat]
        lat_ax.errorbar(sizes, [a["p50_ms"] for a in lat],
                        yerr=[[0] * len(lat), [a["p95_ms"] - a["p50_ms"] for a in lat]], marker="o", capsize=3,
                        color=colors[name], label=f"{name} (p50, bar to p95)")
    lat_ax.set_xscale("log")
    lat_ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lat_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # labelled ticks even over a narrow range
    lat_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # plain numbers: short tick labels
    lat_ax.yaxis.set_minor_formatter(NullFormatter())
    lat_ax.set_xlabel("batch size")
    lat_ax.set_ylabel("latency per batch (ms)")
    speed = ", ".join(f"{k}: {v:.1f}x" for k, v in cost.get("speedup", {}).items() if v)
    lat_ax.set_title(f"Latency ({cost['threads']} thread(s))\nspeed-up by batch size: {speed}", fontsize=9)
    lat_ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    return _save(fig, path)


def plot_cosines(cosines: Any, path: Path) -> Path:
    """Histogram of each test sentence's cosine between student and teacher embedding, with its mean and 5th
    percentile: the tail shows the sentences the student embeds worst."""
    plt = _pyplot()
    import numpy as np

    values = np.asarray(cosines, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
    ax.hist(values, bins=40, color="#2a6fb0", alpha=0.85)
    for q, style, label in ((values.mean(), "-", "mean"), (np.quantile(values, 0.05), "--", "5th percentile")):
        ax.axvline(q, color="black", ls=style, lw=1, label=f"{label} {q:.3f}")
    ax.set_xlabel("cosine(student embedding, teacher embedding)")
    ax.set_ylabel("test sentences")
    ax.set_title("Per-sentence fidelity to the teacher", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)
