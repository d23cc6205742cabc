"""What kdforge costs beyond the work: kdforge vs a hand-written loop doing the same work, in fresh processes.

Each case is one command per side; the comparison is made by timing whole processes side by side, interleaved
(A B A B ...), with the machine's load average written next to the figures (other people share the machine):

    python benchmarks/overhead.py tabular kdforge     # kdforge.distill, per-epoch validation, select: best
    python benchmarks/overhead.py tabular hand        # the same steps written out by hand
    python benchmarks/overhead.py cached plain        # one epoch-timed fit of a ~1.1M-parameter student, CE only
    python benchmarks/overhead.py cached kd           # the same student, kd + ce from a full-logit cache
    python benchmarks/overhead.py import kdforge      # `import kdforge` + `kdforge.distill` resolved
    python benchmarks/overhead.py import torch

The tabular case: a 64-512-512-10 teacher and a 64-128-10 student (`builtin:mlp`), 512 training rows (128
validation, 256 test) from a fixed Gaussian mixture (seed 0), batch 64, 40 epochs, Adam lr 1e-3, kd (T=4) 0.9 + ce
0.1, validation accuracy after every epoch keeping the best weights, test accuracy at the end. The `cached` case
prints its own per-epoch figure (median wall seconds of epochs 2..N, CPU time too) so that the ratio is the
epoch's, free of process start-up. Results: benchmarks/results/overhead.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROWS, VAL, TEST, FEATURES, CLASSES, BATCH, EPOCHS = 512, 128, 256, 64, 10, 64, 40


def tabular_data():
    import torch

    g = torch.Generator().manual_seed(0)
    centres = 2.0 * torch.randn(CLASSES, FEATURES, generator=g)
    n = ROWS + VAL + TEST
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = centres[y] + 2.5 * torch.randn(n, FEATURES, generator=g)
    return (x[:ROWS], y[:ROWS]), (x[ROWS:ROWS + VAL], y[ROWS:ROWS + VAL]), (x[ROWS + VAL:], y[ROWS + VAL:])


def tabular_models():
    import torch

    from kdforge.models.builtin import MLP

    torch.manual_seed(0)
    teacher = MLP(input_shape=(FEATURES,), num_classes=CLASSES, hidden=(512, 512))
    student = MLP(input_shape=(FEATURES,), num_classes=CLASSES, hidden=(128,))
    (x, y), _, _ = tabular_data()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-3)  # a teacher worth imitating: 30 quick epochs
    for _ in range(30):
        for i in range(0, ROWS, BATCH):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(teacher(x[i:i + BATCH]), y[i:i + BATCH]).backward()
            optimizer.step()
    return teacher.eval(), student


def tabular_kdforge() -> dict:
    import kdforge

    teacher, student = tabular_models()
    train, val, test = tabular_data()
    distill = kdforge.distill  # its imports are the `import` case's
    t0 = time.perf_counter()
    _, result = distill(
        teacher, student, {"train": train, "val": val, "test": test},
        losses=[{"name": "kd", "weight": 0.9, "temperature": 4.0}, {"name": "ce", "weight": 0.1}],
        train=kdforge.TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-3, select="best", progress=False))
    return {"seconds": time.perf_counter() - t0, "accuracy": result.student["accuracy"]}


def tabular_hand() -> dict:
    import torch
    import torch.nn.functional as F

    teacher, student = tabular_models()
    (x, y), (xv, yv), (xt, yt) = tabular_data()
    t0 = time.perf_counter()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    best, best_state = -1.0, None
    for _ in range(EPOCHS):
        student.train()
        order = torch.randperm(ROWS, generator=g)
        for i in range(0, ROWS, BATCH):
            rows = order[i:i + BATCH]
            xb, yb = x[rows], y[rows]
            with torch.no_grad():
                t = teacher(xb)
            s = student(xb)
            kd = F.kl_div(F.log_softmax(s / 4, -1), F.log_softmax(t / 4, -1), reduction="batchmean",
                          log_target=True) * 16
            loss = 0.9 * kd + 0.1 * F.cross_entropy(s, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        student.eval()
        with torch.no_grad():
            accuracy = (student(xv).argmax(-1) == yv).float().mean().item()
            agreement = (student(xv).argmax(-1) == teacher(xv).argmax(-1)).float().mean().item()  # kdforge logs it
        if accuracy > best:
            best, best_state = accuracy, copy.deepcopy(student.state_dict())
        del agreement
    student.load_state_dict(best_state)
    with torch.no_grad():
        test_accuracy = (student(xt).argmax(-1) == yt).float().mean().item()
        (teacher(xt).argmax(-1) == yt).float().mean().item()
    return {"seconds": time.perf_counter() - t0, "accuracy": test_accuracy}


def cached_epochs(kd: bool, epochs: int = 6) -> dict:
    """Epoch times of `fit` for a ~1.1M-parameter MLP student on 8,192 rows of 256 features, plain (CE) or
    kd + ce from a full-logit cache of a 256-1024-1024-100 teacher (built first, not timed)."""
    import torch
    from accelerate import Accelerator

    from kdforge.cache.hashing import teacher_fingerprint
    from kdforge.cache.store import CacheSettings, CacheStore, fingerprint_splits, write_cache
    from kdforge.cache.teacher import CachedTeacher
    from kdforge.data.tensors import TensorData
    from kdforge.losses.base import WeightedSum
    from kdforge.losses.ce import CELoss
    from kdforge.losses.kd import KDLoss
    from kdforge.models.builtin import MLP
    from kdforge.train.config import LoopConfig
    from kdforge.train.loop import TrainJob, fit
    from kdforge.train.module import DistillModule

    torch.manual_seed(0)
    n, features, classes = 8192, 256, 100
    x = torch.randn(n, features)
    data = TensorData({"x": x, "labels": torch.randint(0, classes, (n,))})
    student = MLP(input_shape=(features,), num_classes=classes, hidden=(1024, 768))
    params = sum(p.numel() for p in student.parameters())
    work = Path(tempfile.mkdtemp(prefix="kd-overhead-"))
    teacher_source = None
    if kd:
        teacher = MLP(input_shape=(features,), num_classes=classes, hidden=(1024, 1024)).eval()
        splits = {"train": data}
        write_cache(teacher, splits, work / "cache", CacheSettings(), {"teacher": teacher_fingerprint(teacher),
                    "data": fingerprint_splits(splits, ["x"])}, ["x"], {}, batch_size=512)
        teacher_source = CachedTeacher(CacheStore(work / "cache"), ["x"])
        loss = WeightedSum({"kd": KDLoss(4.0), "ce": CELoss()}, {"kd": 0.9, "ce": 0.1})
    else:
        loss = WeightedSum({"ce": CELoss()}, {"ce": 1.0})
    steps = n // 128
    marks: list[tuple[float, float]] = []

    def clock(_student) -> dict[str, float]:
        marks.append((time.perf_counter(), time.process_time()))
        return {"val/accuracy": 0.0}

    job = TrainJob("bench", DistillModule(student, loss, ["x"]), teacher_source, data,
                   LoopConfig(batch_size=128, lr=1e-3, progress=False, eval_every=steps), epochs * steps, work,
                   validate=clock)
    fit(job, Accelerator(cpu=True))
    walls = sorted(b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False))
    cpus = sorted(b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False))
    return {"params": params, "epoch_wall_median": walls[len(walls) // 2], "epoch_wall_min": walls[0],
            "epoch_cpu_median": cpus[len(cpus) // 2]}


def import_time(what: str) -> dict:
    t0 = time.perf_counter()
    if what == "torch":
        import torch  # noqa: F401
    else:
        import kdforge

        kdforge.distill  # noqa: B018 - resolving the public name is part of the cost a user pays
    return {"seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["tabular", "cached", "import"])
    parser.add_argument("side", choices=["kdforge", "hand", "plain", "kd", "torch"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.case != "import":
        import torch

        torch.set_num_threads(args.threads)
    if args.case == "tabular":
        result = tabular_kdforge() if args.side == "kdforge" else tabular_hand()
    elif args.case == "cached":
        result = cached_epochs(kd=args.side == "kd")
    else:
        result = import_time(args.side)
    print(json.dumps({"case": args.case, "side": args.side, **result}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
