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
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.tree import DecisionTreeClassifier

from kdforge import io
from kdforge.metrics.fidelity import clopper_pearson_lower
from kdforge.models.builtin import MLP
from kdforge.trees import CubeSampler, LRHTreeDistiller, MungeSampler, SoftDecisionTree, TrepanTree
from kdforge.trees.conjunctions import all_conjunctions
from kdforge.trees.dp import tree_dp
from kdforge.trees.literals import boolean_literals
from kdforge.trees.synthetic import SkewedCubeSampler, random_tree, uniform_cube
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


# ---------------------------------------------------------------------------------------------------- issue 20
# The paper's claims as measured curves, and the LRH tested where it bends. Every setting below was fixed in
# this code before any of its results were looked at; results go to benchmarks/results/trees_<curve>.{json,md}
# and trees_curves.png. Run one curve at a time (each takes minutes on 2 shared cores):
#     OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trees.py --curve samples_depth
# curves: samples_depth, samples_n, nonuniform, activations, imperfect, provable, realdata, junta.

EPSILON = 0.01  # "reaches fidelity 1 - epsilon"
# Fixed grids (chosen before any of these curves were run; printed in every results header):
CURVE_SEEDS = (0, 1, 2)
LRH_PER_SPLIT = (25, 50, 100, 250, 500, 1000, 2000)  # n_probe = n_val = n_dp; fresh samples = 3x this
EXH_BUDGETS = (25, 50, 100, 250, 500, 1000, 2000)  # teacher-labelled samples of the exhaustive DP
CART_BUDGETS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000)
SAMPLES_DEPTH = [(30, d) for d in (2, 3, 4, 5)]
SAMPLES_N = [(n, 3) for n in (25, 50, 100, 200)]
CURVE_K = 100
PROVABLE_ETA = 0.2  # variance-scaled threshold of the provable variant (FVU <= 0.2)
PROVABLE_PER_SPLIT = (125, 500, 2000)
PROVABLE_CONFIGS = [(30, 2), (30, 3), (30, 4), (25, 3), (50, 3), (100, 3)]
TEACHER_KINDS = [("relu", (256, 256)), ("tanh", (256, 256)), ("gelu", (256, 256)),
                 ("relu", (256,) * 4), ("tanh", (256,) * 4), ("gelu", (256,) * 4)]
TEACHER_KIND_EPOCHS = 100  # epoch cap for the activation / depth teachers (their accuracy is reported)


def make_teacher(key: str, n: int, X: np.ndarray, y: np.ndarray, hidden=HIDDEN, activation: str = "relu",
                 seed: int = 0, max_epochs: int = 300, log=print):
    """A cached MLP teacher (ReLU, or tanh by swapping the activations) trained with Adam on (X, y)."""
    from torch import nn

    from kdforge.trees.teachers import train_classifier

    weights, meta_path = CACHE / f"{key}.safetensors", CACHE / f"{key}.json"
    torch.manual_seed(seed)
    model = MLP(input_shape=(n,), num_classes=1, hidden=tuple(hidden))
    if activation in ("tanh", "gelu"):
        for block in model.blocks:
            block[1] = nn.Tanh() if activation == "tanh" else nn.GELU()
    if weights.is_file() and meta_path.is_file():
        model.load_state_dict(io.load_weights_file(weights, key))
        return model.eval(), json.loads(meta_path.read_text())
    info = train_classifier(model, X, y, lr=1e-3, batch_size=256, max_epochs=max_epochs, seed=seed)
    io.save_tensors(weights, model.state_dict())
    io.write_json(meta_path, info)
    log(f"trained {key}: {info}")
    return model.eval(), info


def planted_setting(n, depth, seed, sampler, activation="relu", hidden=HIDDEN, n_train=N_TEACHER_TRAIN,
                    tag="", max_epochs=300):
    """(planted tree, teacher, meta) for family B on inputs from `sampler`; meta has the teacher's accuracy."""
    rng_seed = config_seed("B", n, depth, seed)
    tree = random_tree(n, depth, "B", np.random.default_rng(rng_seed))
    rng = np.random.default_rng(rng_seed + 1)
    X = sampler(n_train, rng)
    key = f"curve_B_n{n}_d{depth}_s{seed}_{activation}_{'x'.join(map(str, hidden))}_{n_train}{tag}"
    teacher, meta = make_teacher(key, n, X, tree.predict(X), hidden, activation, seed, max_epochs)
    X_test = sampler(N_EVAL, rng)
    meta = {**meta, "test_accuracy": float((labels_from_scores(teacher_scores(teacher, X_test))
                                            == tree.predict(X_test)).mean()), "n_train": n_train}
    return tree, teacher, meta


def eval_points(tree, teacher, sampler, n, depth, seed):
    X = sampler(N_EVAL, np.random.default_rng(config_seed("B", n, depth, seed) + 7))
    return X, labels_from_scores(teacher_scores(teacher, X)), tree.predict(X)


def lrh_row(teacher, sampler, depth, seed, X_eval, y_teacher, y_true, per_split=2000, tree=None, **kw) -> dict:
    t0 = time.perf_counter()
    params = {"top_k": CURVE_K, **kw}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = LRHTreeDistiller(teacher, sampler=sampler, max_depth=depth, n_probe=per_split, n_val=per_split,
                               n_dp=per_split, n_fidelity=0, random_state=seed,
                               reference_conjunctions=tree.node_conjunctions() if tree is not None else None,
                               **params).fit()
    seconds = time.perf_counter() - t0
    pred = est.predict(X_eval)
    return {"fidelity": float((pred == y_teacher).mean()), "accuracy": float((pred == y_true).mean()),
            "leaves": est.tree_.n_leaves, "probes": est.n_probes_, "exhaustive": est.n_exhaustive_,
            "fresh": 3 * per_split, "seconds": seconds, "rank_by": est.rank_by_, "diagnostic": est.lrh_diagnostic_,
            "frontier": est.frontier_sizes_, "bound_warnings": len(caught)}


def samples_to_reach(points: list[tuple[int, float]], target: float) -> int | None:
    """Smallest budget whose fidelity is >= target (None: never within the grid)."""
    return next((b for b, f in sorted(points) if f >= target), None)


def curve_samples(configs, log=print) -> list[dict]:
    """Fidelity vs samples for LRH (fresh, 1/3 teacher-labelled), unconstrained CART on teacher labels, and the
    exhaustive DP (all conjunctions of <= d literals, where <= EXHAUSTIVE_LIMIT) on teacher labels."""
    rows = []
    for n, depth in configs:
        sampler = CubeSampler(n)
        for seed in CURVE_SEEDS:
            tree, teacher, meta = planted_setting(n, depth, seed, sampler)
            X_eval, y_teacher, y_true = eval_points(tree, teacher, sampler, n, depth, seed)
            base = {"n": n, "depth": depth, "seed": seed, "teacher_accuracy": meta["test_accuracy"],
                    "planted_fidelity": float((y_true == y_teacher).mean())}
            for m in LRH_PER_SPLIT:
                r = lrh_row(teacher, sampler, depth, seed, X_eval, y_teacher, y_true, m, tree)
                rows.append({**base, "method": "LRH", "samples": r["fresh"], "labelled": m, **r})
                log(f"n={n} d={depth} s={seed} LRH {m}x3: {r['fidelity']:.4f} ({r['seconds']:.1f}s)")
                if r["fidelity"] >= 1 - EPSILON / 2 and m >= 1000:
                    break  # the curve has flattened above the target
            rng = np.random.default_rng(config_seed("B", n, depth, seed) + 11)
            X_all = sampler(max(CART_BUDGETS), rng)
            t0 = time.perf_counter()
            y_all = labels_from_scores(teacher_scores(teacher, X_all))
            label_rate = (time.perf_counter() - t0) / len(X_all)  # teacher-labelling seconds per sample
            for b in CART_BUDGETS:
                t0 = time.perf_counter() - label_rate * b  # CART's time includes labelling its samples
                model = DecisionTreeClassifier(random_state=seed).fit(X_all[:b], y_all[:b])
                pred = model.predict(X_eval)
                rows.append({**base, "method": "CART free", "samples": b, "labelled": b,
                             "fidelity": float((pred == y_teacher).mean()), "accuracy": float((pred == y_true).mean()),
                             "leaves": int(model.get_n_leaves()), "seconds": time.perf_counter() - t0})
            n_exh = sum(2**i * math.comb(n, i) for i in range(depth + 1))
            if n_exh <= EXHAUSTIVE_LIMIT:
                t0 = time.perf_counter()
                conj = all_conjunctions(n, depth)
                enumerate_seconds = time.perf_counter() - t0
                for m in EXH_BUDGETS:
                    t0 = time.perf_counter() - label_rate * m - enumerate_seconds
                    result = tree_dp(conj, X_all[:m].astype(np.int8), y_all[:m], 2, 2**depth)
                    dp_tree = result.build(result.smallest_budget(0.005), boolean_literals(n))
                    pred = dp_tree.predict_proba(X_eval).argmax(axis=1)
                    rows.append({**base, "method": "exhaustive DP", "samples": m, "labelled": m, "probes": n_exh,
                                 "fidelity": float((pred == y_teacher).mean()),
                                 "accuracy": float((pred == y_true).mean()), "leaves": dp_tree.n_leaves,
                                 "seconds": time.perf_counter() - t0})
                    log(f"n={n} d={depth} s={seed} exhaustive {m}: {rows[-1]['fidelity']:.4f}")
    return rows


def curve_settings(name, log=print) -> list[dict]:
    """One budget (2000 per split, 6000 fresh), seeds 0-2: where the LRH bends."""
    rows = []
    settings = {
        "nonuniform": [("skewed p=0.8", 40, 4, SkewedCubeSampler(40, 0.8), "relu", HIDDEN, N_TEACHER_TRAIN,
                        [{"rank_by": "mse"}, {"rank_by": "fvu"}, {"rank_by": "auto"}]),
                       ("correlated c=0.5", 40, 4, SkewedCubeSampler(40, 0.5, 0.5), "relu", HIDDEN,
                        N_TEACHER_TRAIN, [{"rank_by": "mse"}, {"rank_by": "fvu"}, {"rank_by": "auto"}])],
        "activations": [(f"{act} {len(hidden)}x256", 30, 4, CubeSampler(30), act, hidden, N_TEACHER_TRAIN,
                         [{"top_k": 100}, {"top_k": 500}]) for act, hidden in TEACHER_KINDS],
        "imperfect": [(f"teacher on {nt} samples", 30, 4, CubeSampler(30), "relu", HIDDEN, nt, [{"top_k": 100}])
                      for nt in (1000, 2000, 4000)],
    }[name]
    epochs = TEACHER_KIND_EPOCHS if name == "activations" else 300
    for label, n, depth, sampler, activation, hidden, n_train, variants in settings:
        for seed in (0, 1, 2):
            tag = "" if isinstance(sampler, CubeSampler) else f"_{label.replace(' ', '').replace('=', '')}"
            tree, teacher, meta = planted_setting(n, depth, seed, sampler, activation, hidden, n_train, tag, epochs)
            X_eval, y_teacher, y_true = eval_points(tree, teacher, sampler, n, depth, seed)
            base = {"setting": label, "n": n, "depth": depth, "seed": seed, "teacher_accuracy": meta["test_accuracy"],
                    "planted_fidelity": float((y_true == y_teacher).mean())}
            for kw in variants:
                r = lrh_row(teacher, sampler, depth, seed, X_eval, y_teacher, y_true, 2000, tree, **kw)
                rows.append({**base, "method": "LRH " + " ".join(f"{k}={v}" for k, v in kw.items()), **r})
                log(f"{label} s={seed} {rows[-1]['method']}: {r['fidelity']:.4f} ({r['seconds']:.1f}s)")
            rng = np.random.default_rng(config_seed("B", n, depth, seed) + 13)
            X = sampler(6000, rng)
            y = labels_from_scores(teacher_scores(teacher, X))
            for kind in ("depth", "free"):
                model = cart(X, y, depth, kind, seed)
                pred = model.predict(X_eval)
                rows.append({**base, "method": f"CART {kind}", "fidelity": float((pred == y_teacher).mean()),
                             "accuracy": float((pred == y_true).mean()), "leaves": int(model.get_n_leaves())})
    return rows


def per_level(rows: np.ndarray, depth: int) -> list[int]:
    """How many probed conjunctions have 1..depth literals."""
    return np.bincount(np.abs(rows).sum(axis=1), minlength=depth + 1)[1:depth + 1].tolist()


def curve_provable(log=print) -> list[dict]:
    """The provable variant (threshold PROVABLE_ETA on the FVU) beside top_k = 20 (the default) and 100 and CART, on
    the samples-curve teachers at three budgets; its probe counts against the counting bound and the n^d space;
    then two settings where the LRH holds only approximately (tanh teacher, skewed inputs), at the largest budget."""
    rows = []
    variants = [(f"provable eta={PROVABLE_ETA:g}", {"top_k": None, "probe_mse": PROVABLE_ETA}),
                ("LRH top_k=20 (default)", {"top_k": 20}), ("LRH top_k=100", {"top_k": 100})]
    settings = [("uniform relu 2x256", n, d, CubeSampler(n), "relu", "", PROVABLE_PER_SPLIT)
                for n, d in PROVABLE_CONFIGS]
    settings += [("uniform tanh 2x256", 30, 4, CubeSampler(30), "tanh", "", PROVABLE_PER_SPLIT[-1:]),
                 ("skewed p=0.8 relu 2x256", 30, 4, SkewedCubeSampler(30, 0.8), "relu", "_skewedp0.8",
                  PROVABLE_PER_SPLIT[-1:])]
    for label, n, depth, sampler, activation, tag, budgets in settings:
        for seed in CURVE_SEEDS:
            epochs = TEACHER_KIND_EPOCHS if activation != "relu" else 300
            tree, teacher, meta = planted_setting(n, depth, seed, sampler, activation, HIDDEN, N_TEACHER_TRAIN, tag,
                                                  epochs)
            X_eval, y_teacher, y_true = eval_points(tree, teacher, sampler, n, depth, seed)
            base = {"setting": label, "n": n, "depth": depth, "seed": seed, "teacher_accuracy": meta["test_accuracy"],
                    "planted_fidelity": float((y_true == y_teacher).mean()),
                    "space": sum(2**i * math.comb(n, i) for i in range(depth + 1))}
            for per_split in budgets:
                for method, kw in variants:
                    t0 = time.perf_counter()
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        est = LRHTreeDistiller(teacher, sampler=sampler, max_depth=depth, n_probe=per_split,
                                               n_val=per_split, n_dp=per_split, n_fidelity=0, random_state=seed,
                                               reference_conjunctions=tree.node_conjunctions(), **kw).fit()
                    seconds = time.perf_counter() - t0
                    pred = est.predict(X_eval)
                    rows.append({**base, "method": method, "samples": 3 * per_split, "labelled": per_split,
                                 "fidelity": float((pred == y_teacher).mean()),
                                 "accuracy": float((pred == y_true).mean()), "leaves": est.tree_.n_leaves,
                                 "probes": est.n_probes_, "probes_per_level": per_level(est.conjunctions_, depth),
                                 "frontier": est.frontier_sizes_, "frontier_bound": est.frontier_bound_,
                                 "bound_warnings": len(caught), "seconds": seconds,
                                 "diagnostic": est.lrh_diagnostic_})
                    log(f"provable {label} n={n} d={depth} s={seed} {per_split}x3 {method}: {rows[-1]['fidelity']:.4f}"
                        f" probes {est.n_probes_} ({seconds:.1f}s)")
                X = sampler(3 * per_split, np.random.default_rng(config_seed("B", n, depth, seed) + 17))
                y = labels_from_scores(teacher_scores(teacher, X))
                for kind in ("depth", "free"):
                    t0 = time.perf_counter()
                    model = cart(X, y, depth, kind, seed)
                    pred = model.predict(X_eval)
                    rows.append({**base, "method": f"CART {kind}", "samples": 3 * per_split, "labelled": 3 * per_split,
                                 "fidelity": float((pred == y_teacher).mean()),
                                 "accuracy": float((pred == y_true).mean()), "leaves": int(model.get_n_leaves()),
                                 "seconds": time.perf_counter() - t0})
    return rows


JUNTA_CONFIGS = [(30, 3), (30, 5), (100, 3), (100, 5)]  # (n, k)
JUNTA_PAIR_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)  # n_pairs = fraction x the default 8 ln(2n/0.01) 2^k
JUNTA_LRH_PER_SPLIT = (100, 500, 2000)
JUNTA_CART = (300, 1500, 6000, 64000)


def curve_junta(log=print) -> list[dict]:
    """A planted k-junta (random balanced truth table over k of n inputs), an MLP 2x256 teacher trained on 20k
    samples; the junta distiller at a fraction of its default query budget, beside LRH (top_k=100, depth k), CART
    and the exhaustive DP (where <= EXHAUSTIVE_LIMIT conjunctions); then the junta distiller on a family-B tree
    teacher (n=30, d=4), where it must refuse."""
    from kdforge.trees import JuntaDistiller, NotAJuntaError
    from kdforge.trees.junta import default_pairs, default_threshold
    from kdforge.trees.synthetic import random_junta

    rows = []
    for n, k in JUNTA_CONFIGS:
        sampler = CubeSampler(n)
        for seed in CURVE_SEEDS:
            rng_seed = 7919 * seed + 1009 * n + k
            junta = random_junta(n, k, rng_seed)
            X = sampler(N_TEACHER_TRAIN, np.random.default_rng(rng_seed + 1))
            teacher, meta = make_teacher(f"junta_n{n}_k{k}_s{seed}", n, X, junta.predict(X), HIDDEN, "relu", seed,
                                         300, log)
            X_eval = sampler(N_EVAL, np.random.default_rng(rng_seed + 2))
            y_teacher = labels_from_scores(teacher_scores(teacher, X_eval))
            y_true = junta.predict(X_eval)
            base = {"n": n, "k": k, "seed": seed, "teacher_accuracy": float((y_teacher == y_true).mean()),
                    "relevant": sorted(junta.relevant.tolist())}

            def add(method, pred, seconds, samples, labelled, queries, leaves, base=base, y_teacher=y_teacher,
                    y_true=y_true, **extra):
                rows.append({**base, "method": method, "fidelity": float((pred == y_teacher).mean()),
                             "accuracy": float((pred == y_true).mean()), "seconds": seconds, "samples": samples,
                             "labelled": labelled, "queries": queries, "leaves": leaves, **extra})

            default = default_pairs(n, default_threshold(k))
            for fraction in JUNTA_PAIR_FRACTIONS:
                t0 = time.perf_counter()
                est = JuntaDistiller(teacher, k=k, sampler=sampler, n_pairs=max(1, round(fraction * default)),
                                     n_fidelity=0, random_state=seed)
                try:
                    est.fit()
                    add("junta", est.predict(X_eval), time.perf_counter() - t0,
                        est.n_samples_["influence"] + est.n_samples_["tree"], 0,
                        sum(est.n_queries_.values()), est.tree_.n_leaves,
                        n_pairs=est.n_pairs_, found=sorted(est.relevant_.tolist()), refused=None)
                except NotAJuntaError as exc:
                    rows.append({**base, "method": "junta", "n_pairs": est.n_pairs_, "refused": str(exc),
                                 "seconds": time.perf_counter() - t0, "found": sorted(est.relevant_.tolist())})
                log(f"junta n={n} k={k} s={seed} pairs={est.n_pairs_}: "
                    f"{rows[-1].get('fidelity', 'refused')} found={rows[-1]['found']} ({rows[-1]['seconds']:.1f}s)")
            for per_split in JUNTA_LRH_PER_SPLIT:
                t0 = time.perf_counter()
                est = LRHTreeDistiller(teacher, sampler=sampler, max_depth=k, top_k=CURVE_K, n_probe=per_split,
                                       n_val=per_split, n_dp=per_split, n_fidelity=0, random_state=seed).fit()
                add("LRH top_k=100", est.predict(X_eval), time.perf_counter() - t0, 3 * per_split, per_split,
                    3 * per_split, est.tree_.n_leaves, probes=est.n_probes_)
                log(f"junta n={n} k={k} s={seed} LRH {per_split}x3: {rows[-1]['fidelity']:.4f}")
            X_all = sampler(max(JUNTA_CART), np.random.default_rng(rng_seed + 3))
            y_all = labels_from_scores(teacher_scores(teacher, X_all))
            for b in JUNTA_CART:
                t0 = time.perf_counter()
                model = DecisionTreeClassifier(random_state=seed).fit(X_all[:b], y_all[:b])
                add("CART free", model.predict(X_eval), time.perf_counter() - t0, b, b, b, int(model.get_n_leaves()))
            n_exh = sum(2**i * math.comb(n, i) for i in range(k + 1))
            if n_exh <= EXHAUSTIVE_LIMIT:
                conj = all_conjunctions(n, k)
                for b in JUNTA_CART[:2]:
                    t0 = time.perf_counter()
                    result = tree_dp(conj, X_all[:b].astype(np.int8), y_all[:b], 2, 2**k)
                    dp_tree = result.build(result.smallest_budget(0.005), boolean_literals(n))
                    add("exhaustive DP", dp_tree.predict_proba(X_eval).argmax(axis=1), time.perf_counter() - t0, b, b,
                        b, dp_tree.n_leaves, probes=n_exh)
    for seed in CURVE_SEEDS:  # not a junta: a depth-4 anti-greedy tree over up to 15 inputs
        tree, teacher, meta = planted_setting(30, 4, seed, CubeSampler(30))
        for k in (3, 5):
            t0 = time.perf_counter()
            est = JuntaDistiller(teacher, k=k, sampler=CubeSampler(30), n_fidelity=0, random_state=seed)
            try:
                est.fit()
                refused = None
            except NotAJuntaError as exc:
                refused = str(exc)
            rows.append({"n": 30, "k": k, "seed": seed, "method": "junta on a depth-4 tree (not a junta)",
                         "refused": refused, "seconds": time.perf_counter() - t0,
                         "relevant": sorted(np.unique(tree.variables).tolist()),
                         "found": sorted(est.relevant_.tolist()), "teacher_accuracy": meta["test_accuracy"]})
            log(f"non-junta s={seed} k={k}: refused={refused is not None}")
    return rows


REAL_RULE = (("worst radius", "worst concave points", "mean texture"), 3)  # fixed before looking at results


def curve_realdata(log=print) -> list[dict]:
    """A teacher that provably computes a tree on real inputs: an MLP trained on labels from a known depth-2
    rule over breast-cancer features (thresholds at training medians), distilled from MUNGE inputs."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from kdforge.trees.teachers import train_classifier

    data = load_breast_cancer()
    names = list(data.feature_names)
    X = data.data.astype(np.float64)
    x_tr, x_te = train_test_split(X, test_size=0.25, random_state=0)
    a, b, c = (names.index(f) for f in REAL_RULE[0])
    med = np.median(x_tr, axis=0)

    def rule(A):  # depth 2: worst radius > median ? (worst concave points > median) : (mean texture > median)
        return np.where(A[:, a] > med[a], A[:, b] > med[b], A[:, c] > med[c]).astype(np.int64)

    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0) + 1e-8
    sampler = MungeSampler(x_tr, 0.5, 1.0)
    rows = []
    for seed in (0, 1, 2):
        key = f"curve_breast_rule_s{seed}"
        X_train = sampler(20_000, np.random.default_rng(100 + seed))  # MUNGE points labelled by the rule
        torch.manual_seed(seed)
        model = MLP(input_shape=(X.shape[1],), num_classes=1, hidden=(64, 64))
        weights = CACHE / f"{key}.safetensors"
        if weights.is_file():
            model.load_state_dict(io.load_weights_file(weights, key))
        else:
            info = train_classifier(model, ((X_train - mean) / std).astype(np.float32), rule(X_train), max_epochs=100,
                                    seed=seed, stop_at_train_accuracy=0.999)
            io.save_tensors(weights, model.state_dict())
            log(f"trained {key}: {info}")
        model.eval()

        def teacher(A, model=model):
            return teacher_scores(model, ((np.asarray(A) - mean) / std).astype(np.float32))

        y_te = labels_from_scores(teacher(x_te))
        X_munge = sampler(N_EVAL, np.random.default_rng(200 + seed))
        y_munge = labels_from_scores(teacher(X_munge))
        base = {"seed": seed, "rule_fidelity_test": float((rule(x_te) == y_te).mean()),
                "rule_fidelity_munge": float((rule(X_munge) == y_munge).mean())}
        from kdforge.trees.teachers import default_layers, module_activations

        layers = default_layers(model)
        for literals in ("quantile", "sensitivity"):
            t0 = time.perf_counter()
            est = LRHTreeDistiller(teacher, representation=lambda A, model=model, layers=layers: module_activations(
                model, layers, ((np.asarray(A) - mean) / std).astype(np.float32), "teacher"), sampler=sampler,
                max_depth=2, top_k=50, literals=literals, n_thresholds=7, n_fidelity=0, random_state=seed).fit(x_tr)
            rows.append({**base, "method": f"LRH literals={literals}", "seconds": time.perf_counter() - t0,
                         "fidelity_test": float((est.predict(x_te) == y_te).mean()),
                         "fidelity_munge": float((est.predict(X_munge) == y_munge).mean()),
                         "leaves": est.tree_.n_leaves, "rules": est.export_rules(names),
                         "diagnostic": est.lrh_diagnostic_})
            log(f"realdata s={seed} {rows[-1]['method']}: test {rows[-1]['fidelity_test']:.3f} "
                f"munge {rows[-1]['fidelity_munge']:.3f} (rule: {base['rule_fidelity_test']:.3f})")
        Xc = sampler(6000, np.random.default_rng(300 + seed))
        model_c = DecisionTreeClassifier(max_depth=2, random_state=seed).fit(Xc, labels_from_scores(teacher(Xc)))
        rows.append({**base, "method": "CART depth 2", "fidelity_test": float((model_c.predict(x_te) == y_te).mean()),
                     "fidelity_munge": float((model_c.predict(X_munge) == y_munge).mean()),
                     "leaves": int(model_c.get_n_leaves())})
    return rows


CURVES = {
    "samples_depth": lambda log: curve_samples(SAMPLES_DEPTH, log),
    "samples_n": lambda log: curve_samples(SAMPLES_N, log),
    "nonuniform": lambda log: curve_settings("nonuniform", log),
    "activations": lambda log: curve_settings("activations", log),
    "imperfect": lambda log: curve_settings("imperfect", log),
    "provable": curve_provable,
    "realdata": curve_realdata,
    "junta": curve_junta,
}


CURVE_GRIDS = {
    "samples_depth": {"(n, d)": SAMPLES_DEPTH, "seeds": CURVE_SEEDS, "LRH per split": LRH_PER_SPLIT,
                      "LRH top_k": CURVE_K, "exhaustive DP samples": EXH_BUDGETS, "CART samples": CART_BUDGETS,
                      "exhaustive limit (conjunctions)": EXHAUSTIVE_LIMIT, "epsilon": EPSILON},
    "samples_n": {"(n, d)": SAMPLES_N, "seeds": CURVE_SEEDS, "LRH per split": LRH_PER_SPLIT, "LRH top_k": CURVE_K,
                  "exhaustive DP samples": EXH_BUDGETS, "CART samples": CART_BUDGETS,
                  "exhaustive limit (conjunctions)": EXHAUSTIVE_LIMIT, "epsilon": EPSILON},
    "provable": {"(n, d)": PROVABLE_CONFIGS, "seeds": CURVE_SEEDS, "eta (FVU, probe_scale=variance)": PROVABLE_ETA,
                 "per split": PROVABLE_PER_SPLIT, "beside": "LRH top_k=20 (default), top_k=100, CART (same samples)",
                 "where it fails": "n=30 d=4 with a tanh 2x256 teacher, and P(x=+1)=0.8 inputs"},
    "junta": {"(n, k)": JUNTA_CONFIGS, "seeds": CURVE_SEEDS, "junta n_pairs fractions of the default":
              [f"{f:g}" for f in JUNTA_PAIR_FRACTIONS], "LRH per split": JUNTA_LRH_PER_SPLIT,
              "CART samples": JUNTA_CART, "exhaustive DP samples": JUNTA_CART[:2],
              "teacher": "relu 2x256, 20k samples"},
    "activations": {"teachers (activation, hidden)": TEACHER_KINDS, "epoch cap": TEACHER_KIND_EPOCHS,
                    "(n, d)": (30, 4), "seeds": CURVE_SEEDS, "samples": "2000 per split (6000 fresh); CART 6000",
                    "LRH top_k": (100, 500)},
}


def run_curve(name: str, from_json: bool = False) -> None:
    """Run one curve, write benchmarks/results/trees_<name>.json and .md, and redraw trees_curves.png."""
    if from_json:  # rewrite the md (and plots) from the stored results, e.g. after a change to the tables
        meta = json.loads((RESULTS / f"trees_{name}.json").read_text())
        io.write_text(RESULTS / f"trees_{name}.md", curve_markdown(name, meta))
        plot_curves(RESULTS / "trees_curves.png")
        return
    t0 = time.perf_counter()
    rows = CURVES[name](lambda msg: print(msg, flush=True))
    meta = {"curve": name, "wall_seconds": time.perf_counter() - t0, "epsilon": EPSILON, "seeds": list(CURVE_SEEDS),
            "load_average": list(__import__("os").getloadavg()), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                      time.gmtime()),
            "grids": CURVE_GRIDS.get(name, {}), "rows": rows}
    io.write_text(RESULTS / f"trees_{name}.json", json.dumps(meta, indent=1, default=_jsonable) + "\n")
    io.write_text(RESULTS / f"trees_{name}.md", curve_markdown(name, meta))
    plot_curves(RESULTS / "trees_curves.png")


def _jsonable(o):
    return o.item() if hasattr(o, "item") else str(o)


def _diag(d: list[dict] | None) -> str:
    if not d:
        return "-"
    return "; ".join(f"L{x['level']}: {x['probed']}/{x['conjunctions']} probed, FVU max "
                     f"{fmt(x['fvu_max'], '.2f')}, outranked by {'-' if x['outranked'] is None else x['outranked']}"
                     for x in d)


def curve_markdown(name: str, meta: dict) -> str:
    import collections

    rows = meta["rows"]
    out = [f"# Tree distillation curve `{name}` (issue 20)", "",
           f"`OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/trees.py --curve {name}`, run "
           f"{meta.get('date', '(date not recorded)')}; wall {meta['wall_seconds']:.0f} s on a 2-core CPU shared with "
           f"other jobs (load average at the end: {', '.join(f'{x:.2f}' for x in meta['load_average'])}), so "
           "seconds are noisy. Settings fixed in the code before the run. "
           + ("" if name in ("junta", "realdata") else "Family B (anti-greedy) planted trees; ")
           + f"Fidelity = agreement with the teacher on {N_EVAL} fresh points from the same distribution"
           + ("." if name == "realdata" else f"; LRH top_k={CURVE_K} unless stated."), ""]
    out += grid_header(name, meta)
    if name.startswith("samples"):
        out += reach_summary(rows)
        out += [f"Samples needed to reach fidelity >= {1 - EPSILON} (LRH: fresh unlabelled + teacher-labelled, "
                "a third labelled; CART / exhaustive: teacher-labelled). '>' = not reached within the grid.", "",
                "| n | d | seed | LRH samples | LRH probes | exhaustive DP samples | conjunctions (n^d space) | "
                "CART (unconstrained) samples | CART leaves there | LRH s at target | exhaustive s |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        groups = collections.defaultdict(list)
        for r in rows:
            groups[(r["n"], r["depth"], r["seed"], r["method"])].append(r)
        for n, d, seed in sorted({(r["n"], r["depth"], r["seed"]) for r in rows}):
            cells = []
            for method in ("LRH", "exhaustive DP", "CART free"):
                g = groups.get((n, d, seed, method), [])
                hit = samples_to_reach([(r["samples"], r["fidelity"]) for r in g], 1 - EPSILON)
                row = next((r for r in g if r["samples"] == hit), None)
                cells.append((hit, row, g))
            (lh, lr, lg), (eh, er, eg), (ch, cr, cg) = cells
            total = sum(2**i * math.comb(n, i) for i in range(d + 1))
            out.append(f"| {n} | {d} | {seed} | {lh if lh else '>' + str(max(r['samples'] for r in lg))} | "
                       f"{lr['probes'] if lr else '-'} | "
                       f"{eh if eh else ('>' + str(max(r['samples'] for r in eg)) if eg else 'infeasible')} | "
                       f"{total:,} | "
                       f"{ch if ch else '>' + str(max(CART_BUDGETS))} | {cr['leaves'] if cr else '-'} | "
                       f"{fmt(lr['seconds'] if lr else None, '.1f')} | {fmt(er['seconds'] if er else None, '.1f')} |")
        out += ["", "Full curves (fidelity per budget):", "", "| n | d | seed | method | samples: fidelity |",
                "|---|---|---|---|---|"]
        for (n, d, seed, method), g in sorted(groups.items()):
            out.append(f"| {n} | {d} | {seed} | {method} | " +
                       ", ".join(f"{r['samples']}: {r['fidelity']:.3f}" for r in g) + " |")
        lrh = [r for r in rows if r["method"] == "LRH"]
        out += ["", "LRH diagnostic at the largest budget run (planted nodes as reference):", ""]
        for (n, d, seed), _ in sorted({(r["n"], r["depth"], r["seed"]): 0 for r in lrh}.items()):
            last = [r for r in lrh if (r["n"], r["depth"], r["seed"]) == (n, d, seed)][-1]
            out.append(f"- n={n} d={d} seed {seed}: {_diag(last['diagnostic'])}")
    elif name == "junta":
        out += junta_markdown(rows)
    elif name == "provable":
        out += provable_markdown(rows)
    elif name == "realdata":
        out += ["Breast-cancer features; labels from a known depth-2 rule (thresholds at training medians): "
                f"`{REAL_RULE[0][0]} > m ? {REAL_RULE[0][1]} > m : {REAL_RULE[0][2]} > m`. The teacher (MLP 64-64) is "
                "trained on 20k MUNGE points labelled by the rule; the distillers draw fresh MUNGE inputs. "
                "'MUNGE fidelity' is measured on MUNGE draws, so it is a statement about MUNGE's distribution; "
                "'test fidelity' is on the 143 real held-out rows.", "",
                "| seed | method | leaves | test fidelity | MUNGE fidelity | rule's own test / MUNGE fidelity | "
                "diagnostic |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['seed']} | {r['method']} | {r['leaves']} | {r['fidelity_test']:.3f} | "
                       f"{r['fidelity_munge']:.3f} | {r['rule_fidelity_test']:.3f} / {r['rule_fidelity_munge']:.3f} | "
                       f"{_diag(r.get('diagnostic'))} |")
        first = next((r for r in rows if "rules" in r), None)
        if first:
            out += ["", f"Seed {first['seed']}, {first['method']}:", "", "```", *first["rules"], "```"]
    else:
        out += settings_summary(rows)
        out += ["| setting | seed | teacher acc. | planted tree's fidelity | method | fidelity | gap to planted | "
                "leaves | probes | frontier sizes | bound warnings | s | diagnostic (planted nodes) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['setting']} | {r['seed']} | {r['teacher_accuracy']:.4f} | {r['planted_fidelity']:.4f} | "
                       f"{r['method']} | {r['fidelity']:.4f} | {r['fidelity'] - r['planted_fidelity']:+.4f} | "
                       f"{r['leaves']} | {r.get('probes', '-')} | {r.get('frontier', '-')} | "
                       f"{r.get('bound_warnings', '-')} | {fmt(r.get('seconds'), '.1f')} | "
                       f"{_diag(r.get('diagnostic'))} |")
    return "\n".join(out) + "\n"


def settings_summary(rows: list[dict]) -> list[str]:
    """Per setting and method: fidelity over seeds, with the teacher's accuracy and the deepest level's FVU."""
    import collections

    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["setting"], r["method"])].append(r)
    out = ["Summary, median [min-max] over seeds; 'deepest FVU': the largest FVU of a planted node at the deepest "
           "level (LRH diagnostic).", "",
           "| setting | teacher acc. | method | fidelity | gap to planted tree | leaves | deepest FVU |",
           "|---|---|---|---|---|---|---|"]
    for (setting, method), g in groups.items():
        deepest = [r["diagnostic"][-1]["fvu_max"] for r in g if r.get("diagnostic")
                   and r["diagnostic"][-1]["fvu_max"] is not None]
        out.append(f"| {setting} | {_spread([r['teacher_accuracy'] for r in g], 4)} | {method} | "
                   f"{_spread([r['fidelity'] for r in g], 4)} | "
                   f"{_spread([r['fidelity'] - r['planted_fidelity'] for r in g], 4)} | "
                   f"{_spread([r['leaves'] for r in g])} | {_spread(deepest) if deepest else '-'} |")
    return out + ["", "Per seed:", ""]


def provable_markdown(rows: list[dict]) -> list[str]:
    """Samples to 1 - epsilon per method, then fidelity and probe counts per budget (ranges over seeds)."""
    import collections

    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["setting"], r["n"], r["depth"], r["method"])].append(r)
    methods = [m for m in (f"provable eta={PROVABLE_ETA:g}", "LRH top_k=20 (default)", "LRH top_k=100",
                           "CART depth", "CART free") if any(k[3] == m for k in groups)]
    out = [f"The provable variant keeps every candidate whose validation FVU is <= {PROVABLE_ETA:g} "
           "(`top_k=None, probe_mse=eta`, `probe_scale='variance'`), capped at the counting bound (m+1) 2^l "
           "(PAC_DISTILLATION.md 2.3(5), m = width of phi = 1025 here). 'samples': everything drawn (LRH: 3 x per "
           "split, a third teacher-labelled; CART: that many teacher-labelled). Median [min-max] over seeds.", "",
           "### Samples to reach fidelity >= " + f"{1 - EPSILON}", "",
           "| setting | n | d | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    settings = sorted({k[:3] for k in groups}, key=lambda k: (k[0] != "uniform relu 2x256", k[0], k[2], k[1]))
    for key in settings:
        cells = []
        for m in methods:
            g = groups.get((*key, m), [])
            hits = []
            for seed in sorted({r["seed"] for r in g}):
                pts = [(r["samples"], r["fidelity"]) for r in g if r["seed"] == seed]
                hit = samples_to_reach(pts, 1 - EPSILON)
                hits.append(hit if hit is not None else f">{max(b for b, _ in pts):,}")
            cells.append(_spread(hits))
        out.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    out += ["", "### Fidelity and probes per budget", "",
            "| setting | n | d | method | samples | fidelity | leaves | probes | probes per level 1..d (median) | "
            "frontier per level (max) | bound (m+1) 2^l | bound cuts | conjunctions (n^d space) | s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in settings:
        for m in methods:
            g = groups.get((*key, m), [])
            for b in sorted({r["samples"] for r in g}):
                gb = [r for r in g if r["samples"] == b]
                lrh = "probes" in gb[0]
                per = np.median([r["probes_per_level"] for r in gb], axis=0).astype(int).tolist() if lrh else "-"
                front = np.max([r["frontier"] for r in gb], axis=0).tolist() if lrh and gb[0]["frontier"] else "-"
                out.append(f"| {key[0]} | {key[1]} | {key[2]} | {m} | {b:,} | "
                           f"{_spread([r['fidelity'] for r in gb], 4)} | "
                           f"{_spread([r['leaves'] for r in gb])} | "
                           f"{_spread([r['probes'] for r in gb]) if lrh else '-'} | {per} | {front} | "
                           f"{gb[0].get('frontier_bound', '-') if lrh else '-'} | "
                           f"{sum(r.get('bound_warnings', 0) for r in gb) if lrh else '-'} | {gb[0]['space']:,} | "
                           f"{_spread([round(r['seconds'], 2) for r in gb])} |")
    fails = [r for r in rows if r["setting"] != "uniform relu 2x256" and r["method"].startswith("provable")]
    if fails:
        out += ["", "LRH diagnostic of the provable variant where the LRH holds only approximately:", ""]
        for r in fails:
            out.append(f"- {r['setting']} seed {r['seed']}: fidelity {r['fidelity']:.4f} (teacher accuracy "
                       f"{r['teacher_accuracy']:.4f}); {_diag(r['diagnostic'])}")
    return out


def junta_markdown(rows: list[dict]) -> list[str]:
    """Per (n, k): fidelity and cost of each method, ranges over seeds; then the refusals on a non-junta."""
    import collections

    out = ["Planted k-junta: a random balanced truth table over k of n uniform +-1 inputs; MLP 2x256 teacher. "
           "junta = `JuntaDistiller` with n_pairs a fraction of its default; its 'samples' are inputs drawn from "
           "the sampler and 'queries' teacher evaluations (every row: flipped inputs, completions and any "
           "sensitivity sweep included), with no "
           "labelled data; LRH and CART: as in the other curves. Values: median [min-max] over seeds.", "",
           "| n | k | method | budget | fidelity | relevant set found | samples | queries | leaves | s |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    groups = collections.defaultdict(list)
    for r in rows:
        if "not a junta" in r["method"]:
            continue
        budget = r.get("n_pairs") if r["method"] == "junta" else r.get("samples")
        key = (r["n"], r["k"], r["method"], f"n_pairs={budget}" if r["method"] == "junta" else budget)
        groups[key].append(r)
    for (n, k, method, budget), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2],
                                                                             str(kv[0][3]).zfill(12))):
        ok = [r for r in g if r.get("refused") is None]
        found = sum(r.get("found") == r["relevant"] for r in g) if method == "junta" else None
        out.append(f"| {n} | {k} | {method} | {budget} | "
                   f"{_spread([r['fidelity'] for r in ok], 4) if ok else '-'}"
                   f"{'' if len(ok) == len(g) else f' ({len(g) - len(ok)} refused)'} | "
                   f"{'-' if found is None else f'{found}/{len(g)}'} | {_spread([r['samples'] for r in ok])} | "
                   f"{_spread([r['queries'] for r in ok])} | {_spread([r['leaves'] for r in ok])} | "
                   f"{_spread([round(r['seconds'], 2) for r in g])} |")
    bad = [r for r in rows if "not a junta" in r["method"]]
    if bad:
        out += ["", "On a teacher that is not a junta (family B, n = 30, depth 4):", ""]
        for r in bad:
            verdict = "refused: " + r["refused"] if r["refused"] else "NOT refused"
            out.append(f"- seed {r['seed']}, k = {r['k']}: {verdict}")
    return out


def grid_header(name: str, meta: dict) -> list[str]:
    """The fixed grids of a curve, as the run used them (from the json, so a rewrite keeps the run's grids)."""
    grids = meta.get("grids") or {}
    if not grids:
        return []
    return ["Fixed grids (set in `benchmarks/trees.py` before the run): " +
            "; ".join(f"{k} = {v}" for k, v in grids.items()) + ".", ""]


def _spread(values: list, digits: int = 2) -> str:
    """'median [min-max]' over seeds; a value not reached is shown as '>' its grid maximum."""
    if not values:
        return "-"
    if any(isinstance(v, str) for v in values):
        reached = [v for v in values if not isinstance(v, str)]
        return f"{len(reached)}/{len(values)} seeds reach it" + (f" ({', '.join(map(str, reached))})" if reached
                                                                  else f" ({values[0]})")
    lo, hi, med = min(values), max(values), float(np.median(values))
    whole = all(float(v).is_integer() for v in values)
    fmt_v = (lambda v: f"{v:,.0f}") if whole or max(values) >= 10 else (lambda v: f"{v:.{digits}f}")
    return fmt_v(med) if lo == hi else f"{fmt_v(med)} [{fmt_v(lo)}-{fmt_v(hi)}]"


def reach_summary(rows: list[dict]) -> list[str]:
    """Samples and seconds to reach fidelity 1 - epsilon, median [range] over seeds, per (n, d) and method."""
    import collections

    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["n"], r["depth"], r["method"])].append(r)
    seeds = sorted({r["seed"] for r in rows})
    out = [f"Summary over seeds {', '.join(map(str, seeds))}: samples (and seconds, labelling included) to reach "
           f"fidelity >= {1 - EPSILON}; median [min-max]. LRH samples count everything it draws (probe-train + "
           "probe-val unlabelled, DP teacher-labelled); exhaustive DP and CART: teacher-labelled samples. "
           "'k/3 seeds reach it': the others stay below the target on the whole grid. 'teacher acc.' (to the "
           "planted tree) is also the planted tree's own fidelity: where it is below 1 - epsilon, even the true tree "
           "misses the target, so a miss there is the teacher's, not the distiller's.", "",
           "| n | d | conjunctions (n^d space) | LRH probes | LRH samples | LRH s | exhaustive DP samples | "
           "exhaustive s | CART samples | CART s | CART leaves | teacher acc. |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, d in sorted({(r["n"], r["depth"]) for r in rows}):
        cells = {}
        for method in ("LRH", "exhaustive DP", "CART free"):
            hits, secs, probes, leaves = [], [], [], []
            for seed in seeds:
                g = [r for r in groups.get((n, d, method), []) if r["seed"] == seed]
                if not g:
                    continue
                hit = samples_to_reach([(r["samples"], r["fidelity"]) for r in g], 1 - EPSILON)
                if hit is None:
                    hits.append(f">{max(r['samples'] for r in g):,}")
                    continue
                row = next(r for r in g if r["samples"] == hit)
                hits.append(hit)
                secs.append(row["seconds"])
                probes.append(row.get("probes") or 0)
                leaves.append(row["leaves"])
            cells[method] = (hits, secs, probes, leaves)
        lh, ls, lp, _ = cells["LRH"]
        eh, es, _, _ = cells["exhaustive DP"]
        ch, cs, _, cl = cells["CART free"]
        acc = [r["teacher_accuracy"] for r in rows if (r["n"], r["depth"], r["method"]) == (n, d, "LRH")]
        total = sum(2**i * math.comb(n, i) for i in range(d + 1))
        out.append(f"| {n} | {d} | {total:,} | {_spread(lp)} | {_spread(lh)} | {_spread(ls)} | "
                   f"{_spread(eh) if eh else 'infeasible (> ' + format(EXHAUSTIVE_LIMIT, ',') + ')'} | "
                   f"{_spread(es)} | {_spread(ch)} | {_spread(cs)} | {_spread(cl)} | "
                   f"{min(acc):.4f}-{max(acc):.4f} |")
    return out + [""]


def plot_curves(path: Path) -> None:
    """trees_curves.png: fidelity vs samples, one row per samples_* curve, one panel per (n, d), every seed;
    trees_complexity.png: samples and seconds to reach 1 - epsilon vs d and n, and probes vs the n^d space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {}
    for name in ("samples_depth", "samples_n"):
        file = RESULTS / f"trees_{name}.json"
        if file.is_file():
            curves[name] = json.loads(file.read_text())["rows"]
    if not curves:
        return
    width = max(len({(r["n"], r["depth"]) for r in rows}) for rows in curves.values())
    fig, axes = plt.subplots(len(curves), width, figsize=(3.2 * width, 3.0 * len(curves)), squeeze=False,
                             sharey=True)
    colors = {"LRH": "C0", "exhaustive DP": "C2", "CART free": "C3"}
    for row_axes, (name, rows) in zip(axes, curves.items(), strict=True):
        keys = sorted({(r["n"], r["depth"]) for r in rows})
        for ax in row_axes[len(keys):]:
            ax.axis("off")
        for ax, (n, d) in zip(row_axes, keys, strict=False):
            for method, style in (("LRH", "-o"), ("exhaustive DP", "-s"), ("CART free", "--^")):
                for seed in sorted({r["seed"] for r in rows}):
                    g = [r for r in rows if (r["n"], r["depth"]) == (n, d) and r["method"] == method
                         and r["seed"] == seed]
                    if g:
                        ax.plot([r["samples"] for r in g], [r["fidelity"] for r in g], style, markersize=3,
                                label=method if seed == 0 else None, color=colors[method], alpha=0.7)
            ax.axhline(1 - EPSILON, color="0.5", lw=0.8)
            ax.set_xscale("log")
            ax.set_title(f"{name}: n={n}, d={d}", fontsize=8)
            ax.set_xlabel("samples", fontsize=8)
            ax.grid(alpha=0.3)
        row_axes[0].set_ylabel("fidelity to teacher")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    plot_complexity(curves, path.with_name("trees_complexity.png"))


def _to_target(rows: list[dict], key: tuple, method: str, field: str) -> list[float]:
    """Per seed: `field` of the smallest budget reaching 1 - epsilon (seeds that never reach it are left out)."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        g = [r for r in rows if (r["n"], r["depth"]) == key and r["method"] == method and r["seed"] == seed]
        hit = samples_to_reach([(r["samples"], r["fidelity"]) for r in g], 1 - EPSILON)
        if hit is not None:
            out.append(next(r for r in g if r["samples"] == hit)[field])
    return out


def plot_complexity(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(18, 3.4), squeeze=False)
    axes = axes[0]
    colors = {"LRH": "C0", "exhaustive DP": "C2", "CART free": "C3"}
    for col, (name, axis) in enumerate((("samples_depth", "depth"), ("samples_n", "n"))):
        rows = curves.get(name, [])
        keys = sorted({(r["n"], r["depth"]) for r in rows})
        for method in colors:
            for ax, field in ((axes[col], "samples"), (axes[2 + col], "seconds")):
                xs, med, lo, hi = [], [], [], []
                for key in keys:
                    vals = _to_target(rows, key, method, field)
                    if vals:
                        xs.append(key[1] if axis == "depth" else key[0])
                        med.append(np.median(vals))
                        lo.append(np.median(vals) - min(vals))
                        hi.append(max(vals) - np.median(vals))
                        n_seeds = len({r["seed"] for r in rows})
                        if len(vals) < n_seeds:  # say how many seeds the point stands for
                            ax.annotate(f"{len(vals)}/{n_seeds}", (xs[-1], med[-1]), fontsize=7,
                                        color=colors[method])
                if xs:
                    ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, color=colors[method], label=method)
        for ax, what in ((axes[col], "samples"), (axes[2 + col], "seconds")):
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_title(f"{what} to fidelity {1 - EPSILON} vs {axis}\n(median, range over seeds; "
                         "missing: not reached)", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[4]
    for name, marker in (("samples_depth", "o"), ("samples_n", "s")):
        rows = [r for r in curves.get(name, []) if r["method"] == "LRH"]
        for key in sorted({(r["n"], r["depth"]) for r in rows}):
            g = [r for r in rows if (r["n"], r["depth"]) == key]
            ax.scatter([g[0]["exhaustive"]], [np.median([r["probes"] for r in g])], marker=marker, color="C0")
            ax.annotate(f"n={key[0]},d={key[1]}", (g[0]["exhaustive"], np.median([r["probes"] for r in g])),
                        fontsize=6)
    provable = RESULTS / "trees_provable.json"
    if provable.is_file():
        rows = [r for r in json.loads(provable.read_text())["rows"] if r["method"].startswith("provable")]
        ax.scatter([r["space"] for r in rows], [r["probes"] for r in rows], marker="x", color="C1",
                   label="provable variant")
    lim = [1e3, 1e7]
    ax.plot(lim, lim, color="0.5", lw=0.8, label="probes = n^d space")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("conjunctions of <= d literals")
    ax.set_ylabel("probes")
    ax.set_title("probes vs the n^d search space", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    io.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="done", choices=sorted(GRIDS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--teachers-only", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from cached results")
    parser.add_argument("--curve", choices=sorted(CURVES), help="run one issue-20 curve (minutes) instead of a grid")
    parser.add_argument("--from-json", action="store_true", help="with --curve: rewrite its md and plot from json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.curve:
        return run_curve(args.curve, args.from_json)
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
