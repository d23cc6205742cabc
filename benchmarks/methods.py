"""Every distillation method on the same data, teacher and student, over several seeds (run on demand).

    python benchmarks/methods.py [--seeds 0,1,2] [--datasets digits,breast_cancer] [--methods kd,dkd,...]

For each dataset the teacher is trained once and cached under benchmarks/.cache/; every method then
distils the same student architecture from it with the same optimizer budget (steps, batch size, lr,
best-validation selection), and the scratch row is that student trained on the labelled samples alone.
The student sees few labels plus the other training inputs as an unlabelled transfer set: the setting
where the field expects distillation to help. Results: benchmarks/results/methods.md and methods.png.
Method hyper-parameters are the papers' defaults (or the shipped recipes'), not tuned here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from kdforge.app.run import run_recipe  # noqa: E402
from kdforge.data import load_data  # noqa: E402
from kdforge.recipe import DataSpec, recipe_from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "methods"
RESULTS = ROOT / "results"

TRAIN = {"epochs": 30, "batch_size": 64, "lr": 0.003, "select": "best", "progress": False}

DATASETS = {
    "digits": {
        "data": {"source": "sklearn:digits", "student_labels": 100},
        "teacher": {"model": "builtin:cnn", "args": {"channels": [32, 64], "hidden": 96, "dropout": 0.2},
                    "train": {"epochs": 20, "lr": 0.001, "batch_size": 64, "select": "best", "progress": False}},
        "student": {"model": "builtin:cnn", "args": {"channels": [16, 32], "hidden": 32, "dropout": 0.0}},
        # spatial maps (B, 32, 4, 4) vs (B, 64, 4, 4); pre-activations for AB; embeddings (B, 32) vs (B, 96)
        "taps": {"student": {"map": "blocks.1", "pre": "blocks.1.1", "emb": "head.1", "early": "blocks.0"},
                 "teacher": {"map": "blocks.1", "pre": "blocks.1.1", "emb": "head.1"}},
        "spatial": True,
        "rocket_trunk": [64],  # the CNN student has no shared-trunk twin: rocket's light net is the 4.8k MLP
    },
    "breast_cancer": {
        "data": {"source": "sklearn:breast_cancer", "student_labels": 40, "test_size": 0.25, "val_size": 0.15},
        "teacher": {"model": "builtin:mlp", "args": {"hidden": [256, 256], "dropout": 0.2},
                    "train": {"epochs": 40, "lr": 0.001, "batch_size": 32, "select": "best", "progress": False}},
        "student": {"model": "builtin:mlp", "args": {"hidden": [16, 8]}},
        "taps": {"student": {"map": "blocks.1", "pre": "blocks.1.0", "emb": "blocks.1", "early": "blocks.0"},
                 "teacher": {"map": "blocks.1", "pre": "blocks.1.0", "emb": "blocks.1"}},
        "spatial": False,
        "rocket_trunk": [16, 8],  # the same layers as the student: rocket's light net is the student
        "train": {"batch_size": 32},
    },
}

KD = [{"name": "kd", "weight": 0.9, "temperature": 4.0}, {"name": "ce", "weight": 0.1}]
CE = {"name": "ce", "weight": 1.0}

METHODS: dict[str, dict] = {
    "kd": {"losses": KD},
    "logit_mse": {"losses": [{"name": "logit_mse", "weight": 0.1}, {"name": "ce", "weight": 0.1}]},
    "dkd": {"losses": [{"name": "dkd", "alpha": 1.0, "beta": 8.0, "temperature": 4.0, "pseudo_labels": True},
                       {"name": "ce", "weight": 0.1}]},
    "fitnet": {"losses": [{"name": "fitnet", "pairs": [["map", "map"]], "stop_step": 150},
                          {"name": "kd", "weight": 0.9, "temperature": 4.0, "start_step": 150},
                          {"name": "ce", "weight": 0.1}]},
    "at": {"losses": [{"name": "at", "weight": 1000.0, "pairs": [["map", "map"]]}, *KD], "spatial": True},
    "ab": {"losses": [{"name": "ab", "pairs": [["pre", "pre"]], "stop_step": 150},
                      {"name": "kd", "weight": 0.9, "temperature": 4.0, "start_step": 150},
                      {"name": "ce", "weight": 0.1}]},
    # the authors' beta = 100 is divided by the hidden width in their code; weight 1 is that scale here
    "pkd": {"losses": [{"name": "pkd", "weight": 1.0, "pairs": [["emb", "emb"]], "projector": "linear"}, *KD]},
    "rkd": {"losses": [{"name": "rkd", "pairs": [["emb", "emb"]]}, *KD]},
    "sp": {"losses": [{"name": "sp", "weight": 3000.0, "pairs": [["emb", "emb"]]}, *KD]},
    "crd": {"losses": [{"name": "crd", "weight": 0.8, "pairs": [["emb", "emb"]], "num_samples": "N",
                        "embed_dim": 64, "num_negatives": 512}, *KD]},
    "ensemble": {"losses": KD, "ensemble": True},
    "dml": {"losses": [{"name": "kd", "weight": 1.0, "temperature": 1.0}, CE], "online": True},
    "born_again": {"losses": KD, "born_again": True},
    # self-distillation without a teacher: no use for unlabelled inputs, so they train on the labelled rows only
    "sd_dropout": {"losses": [CE, {"name": "sd_dropout", "weight": 1.0}], "student_dropout": 0.3, "self": True},
    "multi_exit": {"losses": [CE, {"name": "multi_exit", "exits": ["early"]}], "self": True},
    "rocket": {"losses": [CE, {"name": "rocket", "booster": "booster", "hint_weight": 0.1}], "rocket": True,
               "self": True},
}


def teacher_folder(dataset: str, seed: int = 0) -> Path:
    """Train (once) and cache the dataset's teacher; later runs name the saved folder."""
    folder = CACHE / dataset / f"teacher-{seed}"
    if (folder / "teacher" / "model.json").is_file():
        return folder / "teacher"
    spec = DATASETS[dataset]
    teacher = {**spec["teacher"], "train": {**spec["teacher"]["train"], "seed": seed}}
    recipe = {"name": f"{dataset}-teacher-{seed}", "data": spec["data"], "teacher": teacher,
              "student": spec["student"], "losses": [CE], "baseline": False,
              "train": {**TRAIN, "max_steps": 1}}
    run_recipe(recipe_from_dict(recipe), out_dir=folder, overwrite=True)
    return folder / "teacher"


def method_recipe(dataset: str, method: str, seeds: list[int]) -> dict | None:
    spec, config = DATASETS[dataset], METHODS[method]
    if config.get("spatial") and not spec["spatial"]:
        return None
    student = json.loads(json.dumps(spec["student"]))
    if config.get("student_dropout"):
        student["args"]["dropout"] = config["student_dropout"]
    if config.get("rocket"):
        student = {"model": "builtin:rocket_mlp", "args": {"trunk": spec["rocket_trunk"], "booster": [256, 256]}}
    if config.get("born_again"):
        student = json.loads(json.dumps({k: v for k, v in spec["teacher"].items() if k != "train"}))
    if config.get("ensemble"):
        teacher = {"members": [{"path": str(teacher_folder(dataset, s))} for s in (0, 1, 2)]}
    elif config.get("online"):
        teacher = {**{k: v for k, v in spec["teacher"].items() if k != "train"}, "online": True}
    else:
        teacher = {"path": str(teacher_folder(dataset))}
    losses = json.loads(json.dumps(config["losses"]))
    for term in losses:
        if term.get("num_samples") == "N":
            term["num_samples"] = 2000
    data, train = spec["data"], {**TRAIN, **spec.get("train", {})}
    if config.get("self"):  # labelled rows only, but the same optimizer steps as every other row of the table
        data = {**data, "transfer_set": False}
        n_train = len(load_data(DataSpec(**spec["data"])).student_train)
        train["max_steps"] = train["epochs"] * math.ceil(n_train / train["batch_size"])
    return {
        "name": f"{dataset}-{method}", "seeds": seeds, "data": data, "teacher": teacher, "student": student,
        "taps": spec["taps"] if not config.get("born_again") else {}, "losses": losses,
        "train": train, "baseline": method == "kd",
        "generations": 2 if config.get("born_again") else 1,
    }


def summarise(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="Rewrite methods.md from methods.json.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    stored = RESULTS / "methods.json"  # a rerun of some methods keeps the other rows
    rows: dict[str, dict[str, dict]] = json.loads(stored.read_text()) if stored.is_file() else {}
    if args.table_only:
        return write_results(rows, seeds)
    for dataset in args.datasets.split(","):
        rows.setdefault(dataset, {})
        for method in args.methods.split(","):
            recipe = method_recipe(dataset, method, seeds)
            if recipe is None:
                continue
            # ensemble, born-again and mutual learning reuse taps only where their students have them
            if method in ("ensemble", "dml", "born_again", "kd", "logit_mse", "dkd", "sd_dropout"):
                recipe["taps"] = {}
            if method == "rocket":
                recipe["taps"] = {"student": {"booster": "booster"}}
            if method == "multi_exit":
                recipe["taps"] = {"student": {"early": DATASETS[dataset]["taps"]["student"]["early"]}}
            started = time.perf_counter()
            out = CACHE / dataset / "runs" / method
            report = run_recipe(recipe_from_dict(recipe), out_dir=out, overwrite=True).report
            seconds = time.perf_counter() - started
            rows[dataset][method] = {"report": _kept(report["student"], report["teacher"]), "seconds": seconds}
            if "scratch" in report:
                rows[dataset]["scratch"] = {"report": _kept(report["scratch"], report["teacher"]), "seconds": None}
            RESULTS.mkdir(parents=True, exist_ok=True)
            stored.write_text(json.dumps(rows, indent=1))
            student = report["student"]
            print(f"{dataset:14s} {method:11s} acc {summarise([m['accuracy'] for m in student['per_seed']])}  "
                  f"agreement {100 * student['agreement']:.2f}  ({seconds:.0f} s)", flush=True)
    write_results(rows, seeds)


def _kept(student: dict, teacher: dict) -> dict:
    """The numbers the table needs, small enough to keep in benchmarks/results/methods.json."""
    return {"student": {"agreement": student["agreement"], "agreement_lower_95": student["agreement_lower_95"],
                        "per_seed": [{"seed": m["seed"], "accuracy": m["accuracy"]} for m in student["per_seed"]]},
            "teacher": {"accuracy": teacher["accuracy"], "params": teacher["params"]}}


def write_results(rows: dict[str, dict[str, dict]], seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdforge.app.rundir import environment

    RESULTS.mkdir(parents=True, exist_ok=True)
    env = environment()
    lines = ["# Methods benchmark", "",
             f"`python benchmarks/methods.py` on {env['platform']}, torch {env['torch']}, "
             f"{torch.get_num_threads()} thread(s); seeds {seeds}. Student accuracy and agreement are on the test "
             "split, mean ± std over seeds; the bound is the weakest seed's one-sided 95% Clopper-Pearson lower "
             "bound on agreement; time is the wall time of all seeds (teacher training excluded, it is cached).", ""]
    fig, axes = plt.subplots(1, len(rows), figsize=(6 * len(rows), 4), squeeze=False)
    seeds = sorted({m["seed"] for methods in rows.values() for r in methods.values()
                    for m in r["report"]["student"]["per_seed"]})
    for ax, (dataset, methods) in zip(axes[0], rows.items(), strict=True):
        if not methods:
            continue
        teacher = next(iter(methods.values()))["report"]["teacher"]
        spec = DATASETS[dataset]
        lines += [f"## {dataset}", "", f"Teacher `{spec['teacher']['model']}` {spec['teacher']['args']}: "
                  f"test accuracy {100 * teacher['accuracy']:.2f}% ({teacher['params']:,} parameters). Student "
                  f"`{spec['student']['model']}` {spec['student']['args']}, {spec['data']['student_labels']} "
                  "labelled training samples; the other training inputs are an unlabelled transfer set for the "
                  "methods with a teacher, while the methods without one (sd_dropout, multi_exit, rocket) train "
                  "on the labelled samples for the same number of optimizer steps. Scratch: the same student, "
                  "seeds and steps, cross-entropy on the labelled samples.", "",
                  "| method | student accuracy (%) | agreement with teacher (%) | 95% lower bound (%) | time (s) |",
                  "|---|---:|---:|---:|---:|"]
        order = ["scratch"] + [m for m in METHODS if m in methods]
        names, means, stds = [], [], []
        for method in order:
            if method not in methods:
                continue
            student = methods[method]["report"]["student"]
            accs = [m["accuracy"] for m in student["per_seed"]]
            seconds = methods[method]["seconds"]
            note = {"dml": " (seed 0's peer as teacher)", "rocket": " (a rocket_mlp student: light net + booster)",
                    "born_again": " (student = teacher architecture, 2 generations)",
                    "sd_dropout": " (no teacher; dropout 0.3)", "multi_exit": " (no teacher)"}.get(method, "")
            wall = "-" if seconds is None else f"{seconds:.0f}"
            lines.append(f"| {method}{note} | {summarise(accs)} | {100 * student['agreement']:.2f} | "
                         f"{100 * student['agreement_lower_95']:.2f} | {wall} |")
            names.append(method)
            means.append(100 * statistics.fmean(accs))
            stds.append(100 * (statistics.stdev(accs) if len(accs) > 1 else 0.0))
        lines.append("")
        colors = ["#999999" if n == "scratch" else "#2a6fb0" for n in names]
        ax.bar(names, means, yerr=stds, capsize=3, color=colors)
        ax.axhline(100 * teacher["accuracy"], color="black", ls="--", lw=1, label="teacher")
        ax.set_ylim(max(0, min(means) - 10), 100)
        ax.set_title(f"{dataset}: student test accuracy")
        ax.tick_params(axis="x", rotation=60)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "methods.png", dpi=110)
    (RESULTS / "methods.md").write_text("\n".join(lines + ["![methods](methods.png)", ""]))


if __name__ == "__main__":
    sys.exit(main())
