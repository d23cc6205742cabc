"""Benchmark: LRH decision-tree distillation vs surrogate CART, exhaustive DP and controls (issue 10).

Follows PAC_DISTILLATION.md section 4. Run on demand (minutes; teachers are cached in benchmarks/.cache/):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trees.py --grid main      # the done-when case + grid
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trees.py --teachers-only  # only train/cache teachers

Writes benchmarks/results/trees.md (tables) and benchmarks/results/trees.png (plot).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier

from kdforge import io
from kdforge.metrics.fidelity import clopper_pearson_lower
from kdforge.models.builtin import MLP
from kdforge.trees import CubeSampler, LRHTreeDistiller, SoftDecisionTree, TrepanTree
from kdforge.trees.conjunctions import all_conjunctions
from kdforge.trees.dp import tree_dp
from kdforge.trees.literals import boolean_literals
from kdforge.trees.synthetic import random_tree, uniform_cube
from kdforge.trees.teachers import default_layers, labels_from_scores, module_activations, teacher_scores, train_mlp

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results"
N_TEACHER_TRAIN = 20_000
HIDDEN = (256, 256)


def config_seed(family: str, n: int, depth: int, seed: int) -> int:
    return 1_000_003 * seed + 1009 * n + 101 * depth + "ABC".index(family)


def get_teacher(family: str, n: int, depth: int, seed: int, log=print):
    """(planted tree, teacher MLP, meta) for one configuration; trained once and cached on disk."""
    rng_seed = config_seed(family, n, depth, seed)
    tree = random_tree(n, depth, family, np.random.default_rng(rng_seed))
    name = f"teacher_{family}_n{n}_d{depth}_s{seed}"
    weights, meta_path = CACHE / f"{name}.safetensors", CACHE / f"{name}.json"
    model = MLP(input_shape=(n,), num_classes=1, hidden=HIDDEN)
    if weights.is_file() and meta_path.is_file():
        model.load_state_dict(io.load_weights_file(weights, name))
        return tree, model.eval(), json.loads(meta_path.read_text())
    rng = np.random.default_rng(rng_seed + 1)
    X = uniform_cube(N_TEACHER_TRAIN, n, rng)
    y = tree.predict(X)
    model, info = train_mlp(X, y, HIDDEN, lr=1e-3, batch_size=256, max_epochs=300, seed=seed)
    X_test = uniform_cube(20_000, n, rng)
    test_acc = float((labels_from_scores(teacher_scores(model, X_test)) == tree.predict(X_test)).mean())
    meta = {**info, "test_accuracy": test_acc, "n_train": N_TEACHER_TRAIN, "hidden": list(HIDDEN)}
    io.save_tensors(weights, model.state_dict())
    io.write_json(meta_path, meta)
    log(f"trained {name}: {meta}")
    return tree, model, meta



B_FRESH = 6000  # N_probe = N_val = N_dp = 2000 (section 4.2)
N_EVAL = 20_000
EXHAUSTIVE_LIMIT = 100_000  # run the exhaustive DP only below this many conjunctions
TOP_KS = (20, 100)


def minimal_size(tree) -> int:
    """Fewest leaves of a tree computing the planted function (exhaustive DP over its relevant variables)."""
    relevant = np.unique(tree.variables)
    m = len(relevant)
    if m <= 12:
        sub = np.array(np.meshgrid(*[[-1, 1]] * m, indexing="ij")).reshape(m, -1).T
    else:
        sub = uniform_cube(8192, m, 0).astype(int)
    X = np.zeros((len(sub), tree.n_features))
    X[:, relevant] = sub
    y = tree.predict(X)
    result = tree_dp(all_conjunctions(m, tree.depth), sub.astype(np.int8), y, 2, 2**tree.depth)
    assert result.best_correct(2**tree.depth) == len(y)
    return result.smallest_budget(0.0)


def evaluate(predict, X_eval, y_teacher, y_true) -> dict:
    pred = predict(X_eval)
    agree = int((pred == y_teacher).sum())
    return {"fidelity": agree / len(y_teacher), "fidelity_lower": clopper_pearson_lower(agree, len(y_teacher)),
            "accuracy": float((pred == y_true).mean())}


def cart(X, y, depth, kind, seed):
    params = {"depth": {"max_depth": depth}, "leaves": {"max_leaf_nodes": 2**depth}, "free": {}}[kind]
    return DecisionTreeClassifier(random_state=seed, **params).fit(X, y)


def run_config(family: str, n: int, depth: int, seed: int, log=print) -> list[dict]:
    """Every method on one (family, n, depth, seed); one row per method."""
    tree, teacher, meta = get_teacher(family, n, depth, seed, log)
    rng = np.random.default_rng(config_seed(family, n, depth, seed) + 2)
    X_eval = uniform_cube(N_EVAL, n, rng)
    y_eval_teacher = labels_from_scores(teacher_scores(teacher, X_eval))
    y_eval_true = tree.predict(X_eval)
    sampler = CubeSampler(n)
    base = {"family": family, "n": n, "depth": depth, "seed": seed, "teacher_test_accuracy": meta["test_accuracy"],
            "teacher_seconds": meta["seconds"], "teacher_samples": meta["n_train"],
            "minimal_leaves": minimal_size(tree)}
    rows = []

    def add(method, predict, seconds, leaves, tree_depth, fresh, labelled, probes=None, exhaustive=None, **extra):
        rows.append({**base, "method": method, **evaluate(predict, X_eval, y_eval_teacher, y_eval_true),
                     "seconds": seconds, "leaves": leaves, "tree_depth": tree_depth, "fresh_unlabelled": fresh,
                     "labelled": labelled, "probes": probes, "exhaustive": exhaustive, **extra})

    torch.manual_seed(10_000 + seed)  # control (i): the same architecture with random weights
    random_model = MLP(input_shape=(n,), num_classes=1, hidden=HIDDEN).eval()
    layers = default_layers(random_model)
    controls = {
        "": None,
        " control:random-weights": lambda X: module_activations(random_model, layers, X, "control"),
        " control:raw-inputs": lambda X: X,
    }
    for k in TOP_KS:
        for tag, representation in controls.items():
            if tag and k != max(TOP_KS):
                continue
            t0 = time.perf_counter()
            est = LRHTreeDistiller(teacher, representation=representation, sampler=sampler, max_depth=depth, top_k=k,
                                   n_fidelity=0, random_state=seed).fit()
            seconds = time.perf_counter() - t0
            true_rows = {r.tobytes() for r in tree.node_conjunctions()}
            found = [m for r, m in zip(est.conjunctions_, est.probe_mse_, strict=True) if r.tobytes() in true_rows]
            add(f"LRH k={k}{tag}", est.predict, seconds, est.tree_.n_leaves, est.tree_.depth,
                fresh=est.n_samples_["probe_train"] + est.n_samples_["probe_val"], labelled=est.n_samples_["dp"],
                probes=est.n_probes_, exhaustive=est.n_exhaustive_, true_nodes_probed=f"{len(found)}/{len(true_rows)}",
                true_node_max_mse=max(found) if found else None, timings=est.timings_)
    for budget, tag in ((B_FRESH, ""), (100_000, " @100k")):
        X = uniform_cube(budget, n, rng)
        y_teacher = labels_from_scores(teacher_scores(teacher, X))
        y_true = tree.predict(X)
        for kind in ("depth", "leaves", "free"):
            for labels, name in ((y_teacher, "CART teacher"), (y_true, "CART scratch")):
                if tag and name == "CART scratch":
                    continue
                t0 = time.perf_counter()
                model = cart(X, labels, depth, kind, seed)
                add(f"{name} {kind}{tag}", model.predict, time.perf_counter() - t0, model.get_n_leaves(),
                    model.get_depth(), fresh=0, labelled=budget)
    X = uniform_cube(N_TEACHER_TRAIN, n, rng)  # scratch at the teacher's own budget
    t0 = time.perf_counter()
    model = cart(X, tree.predict(X), depth, "depth", seed)
    add("CART scratch depth @20k", model.predict, time.perf_counter() - t0, model.get_n_leaves(), model.get_depth(),
        fresh=0, labelled=N_TEACHER_TRAIN)
    n_exhaustive = sum(2**i * math.comb(n, i) for i in range(depth + 1))
    if n_exhaustive <= EXHAUSTIVE_LIMIT:
        X = uniform_cube(B_FRESH, n, rng)
        y_teacher = labels_from_scores(teacher_scores(teacher, X))
        t0 = time.perf_counter()
        result = tree_dp(all_conjunctions(n, depth), X.astype(np.int8), y_teacher, 2, 2**depth)
        dp_tree = result.build(result.smallest_budget(0.005), boolean_literals(n))
        add("exhaustive DP", lambda A: dp_tree.predict_proba(A).argmax(axis=1), time.perf_counter() - t0,
            dp_tree.n_leaves, dp_tree.depth, fresh=0, labelled=B_FRESH, probes=n_exhaustive, exhaustive=n_exhaustive)
    for name, est in (("TREPAN", TrepanTree(teacher, sampler=sampler, max_leaf_nodes=2**depth, n_fidelity=0,
                                            random_state=seed)),
                      ("soft tree", SoftDecisionTree(teacher, sampler=sampler, depth=depth, n_fidelity=0,
                                                     random_state=seed))):
        t0 = time.perf_counter()
        est.fit()
        samples = est.n_samples_
        add(name, est.predict, time.perf_counter() - t0, est.n_leaves_,
            est.tree_.depth if hasattr(est, "tree_") else depth, fresh=0,
            labelled=samples["labelled"] + samples.get("synthetic", 0))
    return rows


GRIDS = {
    "done": [("B", 50, 4)],
    "main": [(f, n, d) for f in ("B", "C", "A") for n in (20, 30, 50) for d in (2, 3, 4)],
}


def results_path(family, n, depth, seed) -> Path:
    return CACHE / "results" / f"{family}_n{n}_d{depth}_s{seed}.json"


def fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def summarize(rows: list[dict]) -> str:
    """The markdown report."""
    import collections

    out = ["# Tree distillation benchmark (issue 10)", "",
           "Generated by `benchmarks/trees.py` (PAC_DISTILLATION.md section 4). Inputs uniform on {-1,+1}^n; teacher "
           f"an MLP {HIDDEN} (ReLU) trained with Adam on {N_TEACHER_TRAIN} ground-truth samples until 100% train "
           f"accuracy; every distiller gets {B_FRESH} fresh samples (LRH: 2000 probe-train + 2000 probe-val "
           "unlabelled, "
           "2000 teacher-labelled for the DP) unless marked @100k / @20k. Fidelity = agreement with the teacher on "
           f"{N_EVAL} fresh points, with the one-sided 95% Clopper-Pearson lower bound; accuracy = agreement with the "
           "planted tree. Controls: the LRH distiller with phi from a random-weight copy of the teacher, or phi = x. "
           "Times are wall seconds on the shared 2-core CPU, 1 torch thread; distillation only (teacher training "
           "separately).", ""]
    done = [r for r in rows if (r["family"], r["n"], r["depth"]) == ("B", 50, 4)]
    if done:
        out += verdict(done)
        out += ["## Done-when case: family B, n = 50, depth 4", "",
                "| seed | method | fidelity | lower bound | acc. to truth | leaves (min) | probes / exhaustive | "
                "samples fresh + labelled | distill s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(done, key=lambda r: (r["seed"], order_key(r["method"]))):
            if "@" in r["method"] or r["method"].startswith("CART scratch leaves"):
                continue
            probes = f"{r['probes']:,} / {r['exhaustive']:,}" if r["probes"] else "-"
            out.append(f"| {r['seed']} | {r['method']} | {r['fidelity']:.4f} | {r['fidelity_lower']:.4f} | "
                       f"{r['accuracy']:.4f} | {r['leaves']} ({r['minimal_leaves']}) | {probes} | "
                       f"{r['fresh_unlabelled']} + {r['labelled']} | {r['seconds']:.2f} |")
        teach = {r["seed"]: (r["teacher_test_accuracy"], r["teacher_seconds"]) for r in done}
        out += ["", "Teachers (test accuracy, training seconds): " +
                "; ".join(f"seed {s}: {a:.4f}, {t:.1f} s" for s, (a, t) in sorted(teach.items())), ""]
        big = [r for r in done if "@100k" in r["method"]]
        if big:
            out += ["CART on 100k teacher-labelled samples: " + "; ".join(
                f"seed {r['seed']} {r['method'].split()[2]}: fidelity {r['fidelity']:.3f}, {r['leaves']} leaves"
                for r in sorted(big, key=lambda r: (r["seed"], r["method"]))), ""]
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["family"], r["n"], r["depth"], r["method"])].append(r)
    configs = sorted({(r["family"], r["n"], r["depth"]) for r in rows}, key=lambda c: ("BCA".index(c[0]), c[1], c[2]))
    methods = sorted({r["method"] for r in rows}, key=order_key)
    out += ["## All configurations: mean fidelity over seeds (min over seeds in brackets)", "",
            "Where 1 + 2n + (d-1)*k*2n reaches the whole conjunction space (d = 2 with k = 100), the LRH distiller "
            "probes every conjunction and is the exhaustive learner, so the controls succeed there too: they can only "
            "fail where top-k really prunes the search. 'min leaves' is the smallest tree computing the planted "
            "function, per seed.", "",
            "| family | n | d | min leaves | " + " | ".join(methods) + " |",
            "|---|---|---|---|" + "---|" * len(methods)]
    for c in configs:
        cells = []
        for m in methods:
            g = groups.get((*c, m))
            cells.append("-" if not g else f"{np.mean([r['fidelity'] for r in g]):.3f} "
                                           f"({min(r['fidelity'] for r in g):.2f})")
        mins = sorted({r["minimal_leaves"] for r in rows if (r["family"], r["n"], r["depth"]) == c})
        out.append(f"| {c[0]} | {c[1]} | {c[2]} | {'/'.join(map(str, mins))} | " + " | ".join(cells) + " |")
    out += ["", "## Leaves, probes and time (means over seeds)", "",
            "| family | n | d | method | leaves | acc. to truth | probes | exhaustive | distill s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in configs:
        for m in methods:
            g = groups.get((*c, m))
            if not g or not (m.startswith("LRH") or m.startswith("exhaustive") or m in ("CART teacher free",)):
                continue
            probes = np.mean([r["probes"] for r in g]) if g[0]["probes"] else None
            out.append(f"| {c[0]} | {c[1]} | {c[2]} | {m} | {np.mean([r['leaves'] for r in g]):.1f} | "
                       f"{np.mean([r['accuracy'] for r in g]):.3f} | {fmt(probes, ',.0f')} | "
                       f"{fmt(g[0]['exhaustive'], ',')} | {np.mean([r['seconds'] for r in g]):.2f} |")
    return "\n".join(out) + "\n"


def verdict(done: list[dict]) -> list[str]:
    """The issue's done-when check on family B, n=50, d=4, computed from the rows."""
    def by(method):
        return sorted((r for r in done if r["method"] == method), key=lambda r: r["seed"])

    seeds = len(by("LRH k=100"))
    lines = ["## Verdict (done-when: family B, n = 50, depth 4)", ""]
    for k in TOP_KS:
        fids = [r["fidelity"] for r in by(f"LRH k={k}")]
        secs = [r["seconds"] for r in by(f"LRH k={k}")]
        ok = sum(f >= 0.99 for f in fids)
        lines.append(f"- LRH top_k={k}: fidelity >= 0.99 in {ok} of {seeds} seeds "
                     f"({', '.join(f'{f:.4f}' for f in fids)}); distillation {max(secs):.1f} s at most "
                     f"({'meets' if ok >= 2 and max(secs) < 60 else 'misses'} the target).")
    cart = [r["fidelity"] for r in by("CART teacher depth")]
    big = [r["fidelity"] for r in by("CART teacher depth @100k")]
    lines.append(f"- Depth-matched CART on teacher labels: {', '.join(f'{f:.3f}' for f in cart)} "
                 f"(at 100k samples: {', '.join(f'{f:.3f}' for f in big)}).")
    for tag in ("random-weights", "raw-inputs"):
        fids = [r["fidelity"] for r in by(f"LRH k={max(TOP_KS)} control:{tag}")]
        lines.append(f"- Control ({tag} phi, top_k={max(TOP_KS)}): {', '.join(f'{f:.3f}' for f in fids)}.")
    return lines + [""]


def order_key(method: str):
    order = ["LRH k=20", "LRH k=100", "LRH k=100 control:random-weights", "LRH k=100 control:raw-inputs",
             "exhaustive DP", "CART teacher depth", "CART teacher leaves", "CART teacher free",
             "CART teacher depth @100k", "CART teacher leaves @100k", "CART teacher free @100k", "CART scratch depth",
             "CART scratch leaves", "CART scratch free", "CART scratch depth @20k", "TREPAN", "soft tree"]
    return order.index(method) if method in order else len(order)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = ["LRH k=100", "LRH k=20", "CART teacher depth", "CART teacher depth @100k", "TREPAN",
               "LRH k=100 control:random-weights", "LRH k=100 control:raw-inputs"]
    fams = [f for f in ("B", "C", "A") if any(r["family"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(fams), figsize=(5.5 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams, strict=True):
        configs = sorted({(r["n"], r["depth"]) for r in rows if r["family"] == fam})
        x = np.arange(len(configs))
        for m in methods:
            means = [np.mean([r["fidelity"] for r in rows if r["family"] == fam and (r["n"], r["depth"]) == c
                              and r["method"] == m] or [np.nan]) for c in configs]
            ax.plot(x, means, marker="o", label=m, linestyle="-" if m.startswith("LRH k") and "control" not in m
                    else "--")
        ax.set_xticks(x, [f"n={n}\nd={d}" for n, d in configs], fontsize=7)
        ax.set_ylim(0.45, 1.02)
        ax.set_title(f"family {fam}: fidelity to the teacher (mean of seeds)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="done", choices=sorted(GRIDS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--teachers-only", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from cached results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[dict] = []
    for family, n, depth in GRIDS[args.grid]:
        for seed in range(args.seeds):
            if args.teachers_only:
                get_teacher(family, n, depth, seed)
                continue
            path = results_path(family, n, depth, seed)
            if path.is_file():
                rows += json.loads(path.read_text())
                continue
            if args.report_only:
                continue
            t0 = time.perf_counter()
            result = run_config(family, n, depth, seed)
            io.write_text(path, json.dumps(result, indent=1, default=lambda o: o.item()) + "\n")
            rows += result
            lrh = {r["method"]: r["fidelity"] for r in result if r["method"].startswith("LRH")}
            print(f"{family} n={n} d={depth} seed={seed} ({time.perf_counter() - t0:.0f}s): {lrh}", flush=True)
    if rows:
        # the report covers every cached result, so `--grid done` after `--grid main` keeps the full table
        cached = sorted((CACHE / "results").glob("*.json"))
        rows = [r for p in cached for r in json.loads(p.read_text())]
        io.write_text(RESULTS / "trees.md", summarize(rows))
        plot(rows, RESULTS / "trees.png")


if __name__ == "__main__":
    sys.exit(main())
