"""What kdforge costs beyond the work: kdforge vs a hand-written loop doing the same work, in fresh processes.

Each case is one command per side; the comparison is made by timing whole processes side by side, interleaved
(A B A B ...), with the machine's load average written next to the figures (other people share the machine):

    python benchmarks/overhead.py tabular kdforge     # kdforge.distill, per-epoch validation, select: best
    python benchmarks/overhead.py tabular hand        # the same steps written out by hand
    python benchmarks/overhead.py cached plain        # one epoch-timed fit of a ~1.1M-parameter student, CE only
    python benchmarks/overhead.py cached kd           # the same student, kd + ce from a full-logit cache
    python benchmarks/overhead.py demo kdforge        # `kdforge demo --seeds 0` (teacher, student, scratch, report)
    python benchmarks/overhead.py demo hand           # the same three trainings and test accuracies by hand
    python benchmarks/overhead.py vision kdforge      # ~1.05M-parameter conv student, kd + ce from a cache
    python benchmarks/overhead.py vision hand         # the same from the same cached logits, by hand
    python benchmarks/overhead.py vision plain        # the same student, CE only, through kdforge
    python benchmarks/overhead.py lm kdforge          # token_kd steps of a small causal LM through kdforge
    python benchmarks/overhead.py lm hand             # the same loss and steps by hand
    python benchmarks/overhead.py build write         # write_cache of 8,192 rows x 1,000 logits
    python benchmarks/overhead.py build forward       # the teacher's forward alone over the same batches
    python benchmarks/overhead.py import kdforge      # `import kdforge` + `kdforge.distill` resolved
    python benchmarks/overhead.py import torch
    python benchmarks/overhead.py import help         # what `kdforge --help` imports

    python benchmarks/overhead.py compare tabular kdforge hand --pairs 5 --figure seconds --out FILE.json

`compare` runs the sides of a case in fresh processes, interleaved, after one warm-up round, records the load
average before and after, and gives each side's median and the first side's ratio to each other side round by
round (median, min, max); every round's figures go to the JSON file.

The tabular case: a 64-512-512-10 teacher and a 64-128-10 student (`builtin:mlp`), 512 training rows (128
validation, 256 test) from a fixed Gaussian mixture (seed 0), batch 64, 40 epochs, Adam lr 1e-3, kd (T=4) 0.9 + ce
0.1, validation accuracy after every epoch keeping the best weights, test accuracy at the end. The `cached`,
`vision` and `lm` cases print their own per-epoch (per-step) figures (median of the rounds after the first, wall
and process CPU time) so that the ratio is the loop's, free of process start-up. Results:
benchmarks/results/overhead.md.
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
    # imported on first use (the first statistic, the process layout): paid once a process, in the import case
    import accelerate  # noqa: F401
    import scipy.stats  # noqa: F401
    t0, c0 = time.perf_counter(), time.process_time()
    _, result = distill(
        teacher, student, {"train": train, "val": val, "test": test},
        losses=[{"name": "kd", "weight": 0.9, "temperature": 4.0}, {"name": "ce", "weight": 0.1}],
        train=kdforge.TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-3, select="best", progress=False))
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "accuracy": result.student["accuracy"]}


def tabular_hand() -> dict:
    import torch
    import torch.nn.functional as F

    teacher, student = tabular_models()
    (x, y), (xv, yv), (xt, yt) = tabular_data()
    t0, c0 = time.perf_counter(), time.process_time()
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
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "accuracy": test_accuracy}


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


# ------------------------------------------------------------------------------------------------- the demo


def demo_hand() -> dict:
    """The work of `kdforge demo --seeds 0` written out: the same digits splits' sizes, the same CNN teacher (20
    epochs, validation each epoch, best kept), the same MLP student (kd 0.9 at T=4 + ce 0.1 on 100 labels plus
    the unlabelled transfer set, 600 steps, validation each epoch, best kept) and its scratch twin (the same
    initial weights and 600 steps on the 100 labelled rows, validation every 2 steps as kdforge's epochs of 2
    batches), then the three test accuracies. No report, no files."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from kdforge.models.builtin import MLP, ConvNet

    t0, c0 = time.perf_counter(), time.process_time()
    bunch = load_digits()
    x, y = (bunch.images / 16.0).astype(np.float32)[:, None], bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=round(0.1 * len(x)),
                                                      random_state=0, stratify=y_rest)
    x_train, y_train, x_val, y_val, x_test, y_test = map(torch.from_numpy, (x_train, y_train, x_val, y_val, x_test,
                                                                            y_test))
    labelled, _ = train_test_split(np.arange(len(y_train)), train_size=100, random_state=0, stratify=y_train.numpy())
    labelled = torch.from_numpy(np.sort(labelled))

    def accuracy(model, xs, ys):
        model.eval()
        with torch.no_grad():
            logits = model(xs)
        model.train()
        return (logits.argmax(-1) == ys).float().mean().item(), logits

    def train(model, xs, ys, steps, lr, loss_fn, eval_every):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(0)
        best, state, order, position = -1.0, None, torch.randperm(len(xs), generator=g), 0
        for step in range(1, steps + 1):
            if position >= len(xs):
                order, position = torch.randperm(len(xs), generator=g), 0
            rows = order[position:position + BATCH]
            position += BATCH
            loss = loss_fn(model(xs[rows]), xs[rows], ys[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % eval_every == 0 or step == steps:
                value, logits = accuracy(model, x_val, y_val)
                F.cross_entropy(logits.double(), y_val)  # kdforge's tie-break
                if value > best:
                    best, state = value, copy.deepcopy(model.state_dict())
        model.load_state_dict(state)
        return model

    torch.manual_seed(0)
    teacher = ConvNet((1, 8, 8), 10, channels=(32, 64), hidden=96, dropout=0.2)
    per_epoch = -(-len(x_train) // BATCH)
    train(teacher, x_train, y_train, 20 * per_epoch, 1e-3, lambda s, xb, yb: F.cross_entropy(s, yb), per_epoch)
    teacher.eval()
    torch.manual_seed(0)
    student = MLP((1, 8, 8), 10, hidden=(64,))
    scratch = copy.deepcopy(student)
    transfer = torch.full_like(y_train, -100)
    transfer[labelled] = y_train[labelled]

    def kd(s, xb, yb):
        with torch.no_grad():
            t = teacher(xb)
        soft = F.kl_div(F.log_softmax(s / 4, -1), F.log_softmax(t / 4, -1), reduction="batchmean", log_target=True)
        return 0.9 * soft * 16 + 0.1 * F.cross_entropy(s, yb, ignore_index=-100)

    train(student, x_train, transfer, 30 * per_epoch, 3e-3, kd, per_epoch)
    train(scratch, x_train[labelled], y_train[labelled], 30 * per_epoch, 3e-3,
          lambda s, xb, yb: F.cross_entropy(s, yb), -(-100 // BATCH))
    result = {name: accuracy(model, x_test, y_test)[0] for name, model in
              (("teacher", teacher), ("student", student), ("scratch", scratch))}
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "seconds_without_report": seconds, "cpu_without_report": cpu,
            **result}  # it writes no report


def demo_kdforge() -> dict:
    """`kdforge demo --seeds 0` in this process (the CLI's own path), quiet, into a temporary folder. The time
    spent writing the report (evaluation sections, figures, latency), which the hand-written twin does not do,
    is clocked apart: `seconds_without_report` is the work both sides do. The pipeline's modules and the
    scikit-learn modules the twin uses are imported first, as the twin imports torch and scikit-learn before its
    clock starts (kdforge loads scikit-learn only on first use; import costs are the `import` case's)."""
    import sklearn.datasets  # noqa: F401  (imported before the clock, as the twin imports them)
    import sklearn.model_selection  # noqa: F401
    from typer.testing import CliRunner

    import kdforge.app.run as pipeline
    from kdforge.cli import app

    report, write_report = {"seconds": 0.0, "cpu": 0.0}, pipeline.write_report

    def clocked_report(*args, **kwargs):
        started, cpu = time.perf_counter(), time.process_time()
        try:
            return write_report(*args, **kwargs)
        finally:
            report["seconds"] += time.perf_counter() - started
            report["cpu"] += time.process_time() - cpu

    pipeline.write_report = clocked_report
    t0, c0 = time.perf_counter(), time.process_time()
    out = Path(tempfile.mkdtemp(prefix="kd-demo-")) / "run"
    result = CliRunner().invoke(app, ["demo", "--seeds", "0", "--out", str(out), "-q", "--threads", "1"])
    if result.exit_code != 0:
        raise SystemExit(result.output[-2000:])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "report_seconds": report["seconds"], "report_cpu_seconds":
            report["cpu"], "seconds_without_report": seconds - report["seconds"],
            "cpu_without_report": cpu - report["cpu"]}


# --------------------------------------------------------------------------------------- vision, from a cache


def conv_net(width: int, classes: int = 100):
    """A plain torch.nn conv net on (3, 8, 8) images: width 64 gives about 1.05M parameters."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(4 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4 * width, 4 * width), nn.ReLU(), nn.Linear(4 * width, classes))


VISION_ROWS, VISION_BATCH, VISION_EPOCHS = 1024, 64, 4


def vision_epochs(side: str) -> dict:
    """Epoch times of a ~1.05M-parameter conv student on 1,024 (3, 8, 8) images, batch 64: kdforge's `fit` with kd
    + ce from a full-logit cache of a wider conv teacher (`kdforge`), a hand loop reading the same cached logits
    (`hand`), or kdforge's `fit` with ce alone (`plain`). Median of epochs 2..4, wall and process CPU time."""
    import torch
    import torch.nn.functional as F

    from kdforge.cache.hashing import teacher_fingerprint
    from kdforge.cache.store import CacheSettings, CacheStore, fingerprint_splits, write_cache
    from kdforge.cache.teacher import CachedTeacher
    from kdforge.data.tensors import TensorData
    from kdforge.losses.base import WeightedSum
    from kdforge.losses.ce import CELoss
    from kdforge.losses.kd import KDLoss

    torch.manual_seed(0)
    x = torch.randn(VISION_ROWS, 3, 8, 8)
    data = TensorData({"x": x, "labels": torch.randint(0, 100, (VISION_ROWS,))})
    student = conv_net(64)
    params = sum(p.numel() for p in student.parameters())
    work = Path(tempfile.mkdtemp(prefix="kd-overhead-"))
    marks: list[tuple[float, float]] = []
    teacher_source = None
    if side != "plain":
        teacher = conv_net(96).eval()
        splits = {"train": data}
        write_cache(teacher, splits, work / "cache", CacheSettings(), {"teacher": teacher_fingerprint(teacher),
                    "data": fingerprint_splits(splits, ["x"])}, ["x"], {}, batch_size=256)
        teacher_source = CachedTeacher(CacheStore(work / "cache"), ["x"])
    if side == "hand":
        logits = CacheStore(work / "cache").split("train").arrays["logits"]  # row i is sample i here
        labels = data.tensors["labels"]
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, foreach=True)
        g = torch.Generator().manual_seed(0)
        marks.append((time.perf_counter(), time.process_time()))
        for _ in range(VISION_EPOCHS):
            order = torch.randperm(VISION_ROWS, generator=g)
            for i in range(0, VISION_ROWS, VISION_BATCH):
                rows = order[i:i + VISION_BATCH]
                s, t = student(x[rows]), logits[rows]
                kd = F.kl_div(F.log_softmax(s / 4, -1), F.log_softmax(t / 4, -1), reduction="batchmean",
                              log_target=True) * 16
                loss = 0.9 * kd + 0.1 * F.cross_entropy(s, labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            marks.append((time.perf_counter(), time.process_time()))
    else:
        loss = (WeightedSum({"kd": KDLoss(4.0), "ce": CELoss()}, {"kd": 0.9, "ce": 0.1}) if side == "kdforge"
                else WeightedSum({"ce": CELoss()}, {"ce": 1.0}))
        _clocked_fit(student, loss, ["x"], teacher_source, data, VISION_BATCH, VISION_ROWS // VISION_BATCH,
                     VISION_EPOCHS, work, marks)
    return {"params": params, **_epoch_figures(marks)}


def _clocked_fit(student, loss, inputs, teacher_source, data, batch, every, rounds, work, marks) -> None:
    """kdforge's `fit` for `rounds` x `every` steps, with a validation hook that only reads the clocks."""
    from accelerate import Accelerator

    from kdforge.train.config import LoopConfig
    from kdforge.train.loop import TrainJob, fit
    from kdforge.train.module import DistillModule

    def clock(_student) -> dict[str, float]:
        marks.append((time.perf_counter(), time.process_time()))
        return {"val/accuracy": 0.0}

    marks.append((time.perf_counter(), time.process_time()))
    job = TrainJob("bench", DistillModule(student, loss, inputs), teacher_source, data,
                   LoopConfig(batch_size=batch, lr=1e-3, progress=False, eval_every=every), rounds * every, work,
                   validate=clock)
    fit(job, Accelerator(cpu=True))


def _epoch_figures(marks: list[tuple[float, float]]) -> dict:
    """Median (and min) of the intervals after the first (the first holds set-up and warm-up)."""
    walls = sorted(b[0] - a[0] for a, b in list(zip(marks, marks[1:], strict=False))[1:])
    cpus = sorted(b[1] - a[1] for a, b in list(zip(marks, marks[1:], strict=False))[1:])
    return {"epoch_wall_median": walls[len(walls) // 2], "epoch_wall_min": walls[0],
            "epoch_cpu_median": cpus[len(cpus) // 2]}


# ------------------------------------------------------------------------------------------ a token-level LM


LM_VOCAB, LM_LEN, LM_BATCH, LM_ROWS, LM_EVERY, LM_ROUNDS = 2048, 64, 8, 256, 8, 5


def tiny_lm(width: int, layers: int):
    """A causal transformer language model in plain torch.nn: token ids (B, T) -> logits (B, T, V)."""
    import torch
    from torch import nn

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(LM_VOCAB, width)
            layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
            self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = nn.Linear(width, LM_VOCAB)
            self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(LM_LEN), persistent=False)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(self.embed(input_ids), mask=self.causal, is_causal=True))

    return LM()


def lm_steps(side: str) -> dict:
    """Step times of token-level KD (`token_kd`, forward KL, T=1) from an online 2-layer width-256 teacher into a
    2-layer width-128 student, 8 x 64 tokens a batch, 2,048-token vocabulary: kdforge's `fit` (`kdforge`) or a
    hand loop calling the same loss (`hand`). Median of the 8-step rounds after the first."""
    import torch

    from kdforge.data.tensors import TensorData
    from kdforge.losses.base import Outputs, Targets, WeightedSum
    from kdforge.losses.token_kd import TokenKDLoss
    from kdforge.train.module import OnlineTeacher

    torch.manual_seed(0)
    ids = torch.randint(0, LM_VOCAB, (LM_ROWS, LM_LEN + 1))
    data = TensorData({"input_ids": ids[:, :-1], "labels": ids[:, 1:]})
    teacher, student = tiny_lm(256, 2).eval(), tiny_lm(128, 2)
    loss = TokenKDLoss()
    marks: list[tuple[float, float]] = []
    if side == "hand":
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, foreach=True)
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(LM_ROWS, generator=g)
        marks.append((time.perf_counter(), time.process_time()))
        for step in range(LM_EVERY * LM_ROUNDS):
            position = step * LM_BATCH % LM_ROWS
            if position == 0 and step:
                order = torch.randperm(LM_ROWS, generator=g)
            rows = order[position:position + LM_BATCH]
            x, labels = data.tensors["input_ids"][rows], data.tensors["labels"][rows]
            with torch.no_grad():
                t = teacher(x)
            value = loss(Outputs(logits=student(x)), Outputs(logits=t), Targets(labels=labels))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            if (step + 1) % LM_EVERY == 0:
                marks.append((time.perf_counter(), time.process_time()))
    else:
        _clocked_fit(student, WeightedSum({"token_kd": loss}, {"token_kd": 1.0}), ["input_ids"],
                     OnlineTeacher(teacher, ["input_ids"]), data, LM_BATCH, LM_EVERY, LM_ROUNDS,
                     Path(tempfile.mkdtemp(prefix="kd-overhead-")), marks)
    figures = _epoch_figures(marks)
    return {"step_wall_median": figures["epoch_wall_median"] / LM_EVERY,
            "step_cpu_median": figures["epoch_cpu_median"] / LM_EVERY}


# ---------------------------------------------------------------------------------------------- cache build


BUILD_ROWS, BUILD_FEATURES, BUILD_CLASSES, BUILD_BATCH = 8192, 256, 1000, 512


def cache_build(side: str) -> dict:
    """`write_cache` of full float32 logits (8,192 rows x 1,000 classes, 32 MB) from a 256-1024-1024-1000 MLP
    teacher (`write`: ids, hashes, the probe, allocation, the forward, the copies, flushes and the manifest's
    checksums), against the teacher's forward alone over the same batches (`forward`)."""
    import torch

    from kdforge.cache.hashing import teacher_fingerprint
    from kdforge.cache.store import CacheSettings, fingerprint_splits, hash_splits, write_cache
    from kdforge.data.tensors import TensorData
    from kdforge.models.builtin import MLP

    torch.manual_seed(0)
    x = torch.randn(BUILD_ROWS, BUILD_FEATURES)
    teacher = MLP(input_shape=(BUILD_FEATURES,), num_classes=BUILD_CLASSES, hidden=(1024, 1024)).eval()
    t0, c0 = time.perf_counter(), time.process_time()
    if side == "forward":
        with torch.no_grad():
            for i in range(0, BUILD_ROWS, BUILD_BATCH):
                teacher(x[i:i + BUILD_BATCH])
    else:
        splits = {"train": TensorData({"x": x})}
        hashed = hash_splits(splits, ["x"])  # as `kdforge cache` does: the rows hashed once, for both
        fingerprints = {"teacher": teacher_fingerprint(teacher), "data": fingerprint_splits(splits, ["x"], hashed)}
        t0, c0 = time.perf_counter(), time.process_time()  # the fingerprints are the caller's (computed once)
        write_cache(teacher, splits, Path(tempfile.mkdtemp(prefix="kd-overhead-")) / "cache", CacheSettings(),
                    fingerprints, ["x"], {}, batch_size=BUILD_BATCH, hashed=hashed)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_per_s": BUILD_ROWS / seconds, "cpu_seconds": time.process_time() - c0}


# -------------------------------------------------------------------------------------------------- compare


def compare(case: str, sides: list[str], pairs: int, figure: str, out: Path | None, warmup: int = 1) -> dict:
    """Run `case` for each side in fresh processes, interleaved (A B A B ...; `warmup` rounds not counted),
    and give each side's figures and the ratio of the first side to each other, round by round."""
    import os
    import resource
    import subprocess

    def once(side: str) -> dict:
        started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, __file__, case, side], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
        wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        figures = json.loads(proc.stdout.strip().splitlines()[-1])
        return {**figures, "process_seconds": wall, "process_cpu_seconds": cpu}

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rounds = []
    for i in range(pairs + warmup):
        row = {side: once(side) for side in sides}
        if i >= warmup:
            rounds.append(row)
    load_after = Path("/proc/loadavg").read_text().split()[:3]

    def median(values: list[float]) -> float:
        values, half = sorted(values), len(values) // 2
        return values[half] if len(values) % 2 else (values[half - 1] + values[half]) / 2

    summary: dict = {"case": case, "sides": sides, "figure": figure, "pairs": pairs, "warmup": warmup,
                     "date": time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": load_before, "load_after": load_after,
        "command": f"python benchmarks/overhead.py compare {case} {' '.join(sides)} --pairs {pairs} --figure {figure}"
                   f" --warmup {warmup}",
        "median": {side: median([r[side][figure] for r in rounds]) for side in sides}, "ratios": {}, "rounds": rounds}
    for side in sides[1:]:
        ratios = [r[sides[0]][figure] / r[side][figure] for r in rounds]
        summary["ratios"][f"{sides[0]}/{side}"] = {"median": median(ratios), "min": min(ratios), "max": max(ratios)}
    if out is not None:
        existing = json.loads(out.read_text()) if out.is_file() else {}
        existing[f"{case}:{'/'.join(sides)}:{figure}"] = summary
        out.write_text(json.dumps(existing, indent=1) + "\n")
    return {k: v for k, v in summary.items() if k != "rounds"}


def import_time(what: str) -> dict:
    t0 = time.perf_counter()
    if what == "torch":
        import torch  # noqa: F401
    elif what == "help":  # what `kdforge --help` imports (typer, rich and the command table)
        import kdforge.cli  # noqa: F401
    else:
        import kdforge

        kdforge.distill  # noqa: B018 - resolving the public name is part of the cost a user pays
    return {"seconds": time.perf_counter() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=[*CASES, "compare"])
    parser.add_argument("sides", nargs="+", help="the side to run; after `compare`: the case, then its sides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=5, help="compare: counted rounds (after one warm-up round)")
    parser.add_argument("--figure", default="seconds", help="compare: the figure to compare (process_seconds: "
                        "the whole process, timed from outside)")
    parser.add_argument("--out", type=Path, default=None, help="compare: add the result to this JSON file")
    parser.add_argument("--warmup", type=int, default=1, help="compare: rounds run first and not counted")
    args = parser.parse_args()
    if args.case == "compare":
        print(json.dumps(compare(args.sides[0], args.sides[1:], args.pairs, args.figure, args.out, args.warmup),
                         indent=1))
        return
    side = args.sides[0]
    if side not in CASES[args.case]:
        parser.error(f"{args.case}: sides are {', '.join(CASES[args.case])}")
    if args.case != "import":
        import torch

        torch.set_num_threads(args.threads)
    runs = {"tabular": lambda: tabular_kdforge() if side == "kdforge" else tabular_hand(),
            "cached": lambda: cached_epochs(kd=side == "kd"),
            "import": lambda: import_time(side),
            "demo": lambda: demo_kdforge() if side == "kdforge" else demo_hand(),
            "vision": lambda: vision_epochs(side), "lm": lambda: lm_steps(side), "build": lambda: cache_build(side)}
    result = runs[args.case]()
    print(json.dumps({"case": args.case, "side": side, **result}))
    sys.stdout.flush()


CASES = {"tabular": ("kdforge", "hand"), "cached": ("kd", "plain"), "import": ("kdforge", "torch", "help"),
         "demo": ("kdforge", "hand"), "vision": ("kdforge", "hand", "plain"), "lm": ("kdforge", "hand"),
         "build": ("write", "forward")}


if __name__ == "__main__":
    main()
