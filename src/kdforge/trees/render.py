"""What a user reads: a tree as text rules, as JSON, as a PNG drawing, and the fidelity statement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdforge.trees.tree import Tree


def _name(feature: int, feature_names: list[str] | None) -> str:
    return feature_names[feature] if feature_names is not None else f"x[{feature}]"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def export_text(tree: Tree, classes: np.ndarray, feature_names: list[str] | None = None) -> str:
    """Indented rules in scikit-learn's `export_text` layout, with class counts at each leaf."""
    proba = tree.leaf_proba()
    lines: list[str] = []

    def rec(k: int, indent: str) -> None:
        if tree.feature[k] < 0:
            counts = ", ".join(str(int(round(v))) for v in tree.value[k])
            lines.append(f"{indent}|--- class: {classes[int(np.argmax(proba[k]))]}  (samples per class: {counts})")
            return
        name, t = _name(tree.feature[k], feature_names), _fmt(tree.threshold[k])
        lines.append(f"{indent}|--- {name} <= {t}")
        rec(tree.left[k], indent + "|   ")
        lines.append(f"{indent}|--- {name} >  {t}")
        rec(tree.right[k], indent + "|   ")

    rec(0, "")
    return "\n".join(lines) + "\n"


def export_rules(tree: Tree, classes: np.ndarray, feature_names: list[str] | None = None) -> list[str]:
    """One 'IF ... THEN class c' line per leaf."""
    proba = tree.leaf_proba()
    rules: list[str] = []

    def rec(k: int, conds: list[str]) -> None:
        if tree.feature[k] < 0:
            body = " AND ".join(conds) if conds else "TRUE"
            n = int(round(float(np.sum(tree.value[k]))))
            rules.append(f"IF {body} THEN class {classes[int(np.argmax(proba[k]))]}  ({n} samples)")
            return
        name, t = _name(tree.feature[k], feature_names), _fmt(tree.threshold[k])
        rec(tree.left[k], conds + [f"{name} <= {t}"])
        rec(tree.right[k], conds + [f"{name} > {t}"])

    rec(0, [])
    return rules


def to_dict(tree: Tree, classes: np.ndarray, feature_names: list[str] | None = None) -> dict[str, Any]:
    """Nested JSON-ready dict: {feature, name, threshold, left, right} or {leaf: true, class, counts}."""
    proba = tree.leaf_proba()

    def rec(k: int) -> dict[str, Any]:
        counts = [int(round(v)) for v in tree.value[k]]
        if tree.feature[k] < 0:
            label = classes[int(np.argmax(proba[k]))]
            return {"leaf": True, "class": label.item() if hasattr(label, "item") else label, "counts": counts}
        return {"feature": int(tree.feature[k]), "name": _name(tree.feature[k], feature_names),
                "threshold": float(tree.threshold[k]), "counts": counts,
                "left": rec(tree.left[k]), "right": rec(tree.right[k])}

    return {"n_leaves": tree.n_leaves, "depth": tree.depth, "classes": [c.item() if hasattr(c, "item") else c
                                                                        for c in classes], "root": rec(0)}


def save_png(tree: Tree, classes: np.ndarray, path: str | Path, feature_names: list[str] | None = None,
             title: str | None = None) -> None:
    """Draw the tree (boxes for splits, coloured leaves) with matplotlib's Agg backend; atomic write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdforge.io import write_with

    proba = tree.leaf_proba()
    depth = max(tree.depth, 1)
    n_leaves = max(tree.n_leaves, 1)
    positions: dict[int, tuple[float, float]] = {}
    counter = [0]

    def place(k: int, level: int) -> float:
        if tree.feature[k] < 0:
            x = counter[0]
            counter[0] += 1
        else:
            x = (place(tree.left[k], level + 1) + place(tree.right[k], level + 1)) / 2
        positions[k] = (x, -level)
        return x

    place(0, 0)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * n_leaves), max(3, 1.4 * (depth + 1))))
    colors = plt.get_cmap("tab10")
    for k, (x, y) in positions.items():
        if tree.feature[k] >= 0:
            for child, tag in ((tree.left[k], "yes"), (tree.right[k], "no")):
                cx, cy = positions[child]
                ax.plot([x, cx], [y, cy], color="0.6", zorder=1)
                ax.text((x + cx) / 2, (y + cy) / 2, tag, fontsize=7, color="0.4", ha="center")
            text = f"{_name(tree.feature[k], feature_names)}\n<= {_fmt(tree.threshold[k])}"
            box = {"boxstyle": "round", "facecolor": "white", "edgecolor": "0.3"}
        else:
            c = int(np.argmax(proba[k]))
            text = f"class {classes[c]}\nn={int(round(float(np.sum(tree.value[k]))))}"
            box = {"boxstyle": "round", "facecolor": colors(c % 10), "alpha": 0.35, "edgecolor": "0.3"}
        ax.text(x, y, text, ha="center", va="center", fontsize=8, bbox=box, zorder=2)
    ax.set_xlim(-0.8, n_leaves - 0.2)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def lrh_diagnostic_lines(diagnostic: list[dict[str, Any]]) -> list[str]:
    """A markdown table of `LRHTreeDistiller.lrh_diagnostic_`: per level, how well linear probes explain the
    represented conjunctions (FVU: fraction of variance unexplained; 0 = exactly linear) and how they rank."""
    if not diagnostic:
        return ["(no LRH diagnostic: the tree has no split)"]
    source = diagnostic[0]["source"]
    lines = [f"LRH diagnostic ({'the planted nodes' if source == 'reference' else 'the distilled tree own nodes'}): "
             "FVU near 0 means the network represents the conjunctions linearly; a large FVU, or many "
             "better-ranked candidates, is why a node can be missed.", "",
             "| level | conjunctions | probed | FVU median | FVU max | best candidate FVU | candidates ranked above |",
             "|---|---|---|---|---|---|---|"]

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    for d in diagnostic:
        lines.append(f"| {d['level']} | {d['conjunctions']} | {d['probed']} | {f(d['fvu_median'])} | "
                     f"{f(d['fvu_max'])} | {f(d['best_candidate_fvu'])} | "
                     f"{'-' if d['outranked'] is None else d['outranked']} |")
    return lines


def fidelity_statement(agree: int, n: int, lower: float, confidence: float, what: str = "inputs",
                       samples: str = "fresh samples") -> str:
    """'agrees with the teacher on >= X% of inputs with 95% confidence, from N fresh samples (observed Y%)'."""
    return (f"agrees with the teacher on >= {100 * lower:.2f}% of {what} with {100 * confidence:.0f}% confidence, "
            f"from {n} {samples} (observed agreement {100 * agree / n:.2f}%)")
