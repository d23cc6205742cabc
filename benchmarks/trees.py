"""Benchmark: LRH decision-tree distillation vs surrogate CART, exhaustive DP and controls (issue 10).

Follows PAC_DISTILLATION.md section 4. Run on demand (minutes; teachers are cached in benchmarks/.cache/):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trees.py --grid main      # the done-when case + grid
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trees.py --teachers-only  # only train/cache teachers

Writes benchmarks/results/trees.md (tables) and benchmarks/results/trees.png (plot).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kdforge import io
from kdforge.models.builtin import MLP
from kdforge.trees.synthetic import random_tree, uniform_cube
from kdforge.trees.teachers import labels_from_scores, teacher_scores, train_mlp

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers-only", action="store_true")
    parser.add_argument("--configs", default="B:50:4", help="comma list of FAMILY:N:DEPTH")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    configs = [(f, int(n), int(d)) for f, n, d in (c.split(":") for c in args.configs.split(","))]
    for family, n, depth in configs:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            _, _, meta = get_teacher(family, n, depth, seed)
            print(f"{family} n={n} d={depth} seed={seed}: test acc {meta['test_accuracy']:.4f} "
                  f"({time.perf_counter() - t0:.1f}s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
