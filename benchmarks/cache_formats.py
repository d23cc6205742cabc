"""Teacher-cache formats: bytes per token, build time, error against the dense teacher, and the student each
one trains (CPU, 1 thread, about 20 minutes with 3 seeds).

    nice -n 5 python benchmarks/cache_formats.py [--seeds 0 1 2] [--quick]
    python benchmarks/cache_formats.py --render [--verdict FILE]   # rewrite the .md / .png from the .json

Two parts, both through the real store (`kdforge.cache.write_cache` -> `CachedTeacher` -> `token_kd`):

1. The LM benchmark's scale (benchmarks/llm.py: its data, teacher, student and training budget, its `train`
   and `held_out_perplexity`): a 512-token BPE, GPT-2 4x256 teacher, GPT-2 1x128 students for the same steps
   and batches. For each format and size setting: bytes per token on disk (every array of the train split,
   headers included, divided by the tokens), build time (encoding + writing; the teacher's forward pass is
   timed once apart, because the stores are filled from logits computed once), the loss and gradient error of
   the signal against the dense teacher on held-out tokens (at a reference student), and the student's held-out
   perplexity and ECE, beside the dense-teacher (full float16 store) student and the scratch student. The
   sampled stores are built a second time with other draws (cache seed 1) and train students too, so a result
   does not rest on one draw; every student is also compared with the dense-teacher student of the same seed.
2. A 32k vocabulary: the same corpus's BPE trained with vocab_size 32000 (the corpus stops it short: the model
   vocabulary is padded to 32000, the extra ids never occur), a GPT-2 2x128 teacher trained briefly, stores
   built from it with the teacher running (build time includes its forward), bytes per token on disk, and the
   loss / gradient error on held-out tokens at a reference student (the same model after a few steps). No
   students are trained at 32k (CPU budget): the perplexity column comes from part 1, whose formats have the
   same settings.

Results: benchmarks/results/cache_formats.md, .json and .png (bytes/token at 32k vs student perplexity).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kdforge.app.build import build_loss  # noqa: E402
from kdforge.cache import (  # noqa: E402
    CachedTeacher,
    CacheSettings,
    CacheStore,
    formats,  # noqa: E402
    write_cache,
)
from kdforge.cache.hashing import row_hashes  # noqa: E402
from kdforge.cache.topk import compress_topk  # noqa: E402
from kdforge.data.tensors import sequential_batches  # noqa: E402
from kdforge.llm.data import stdlib_lm, tiny_causal_lm  # noqa: E402
from kdforge.losses.base import Outputs, Targets  # noqa: E402
from kdforge.losses.token_kd import TokenKDLoss  # noqa: E402
from kdforge.metrics.calibration import expected_calibration_error  # noqa: E402
from kdforge.recipe import LossTerm  # noqa: E402
from kdforge.train.module import DistillModule  # noqa: E402
from llm import BATCH, INPUTS, SEQ_LEN, VOCAB, held_out_perplexity, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VOCAB_32K = 32000
# (label, settings): every format and size setting measured; "full" is the dense-teacher reference
FORMATS = {
    "full float16": dict(logits="full", dtype="float16"),
    "topk k=16 (float16 logits + lse)": dict(logits="topk", k=16, dtype="float16"),
    "topk_tail k=8 uint8": dict(logits="topk_tail", k=8, values="uint8"),
    "topk_tail k=16 uint8": dict(logits="topk_tail", k=16, values="uint8"),
    "topk_tail k=32 uint16": dict(logits="topk_tail", k=32, values="uint16"),
    "sampled N=12": dict(logits="sampled", samples=12),
    "sampled N=32": dict(logits="sampled", samples=32),
    "sampled N=12 tau=2": dict(logits="sampled", samples=12, proposal_temperature=2.0),
}
# the sampled stores again with other draws (cache seed 1): how much a student depends on the one draw it reads;
# measured at 512 only (their bytes and error at 32k are those of the seed-0 stores)
DRAW_VARIANTS = {
    "sampled N=12, draws seed 1": dict(logits="sampled", samples=12, seed=1),
    "sampled N=32, draws seed 1": dict(logits="sampled", samples=32, seed=1),
}
TRAINED = ["full float16", "topk k=16 (float16 logits + lse)", "topk_tail k=16 uint8", "sampled N=12", "sampled N=32",
           *DRAW_VARIANTS]
DRAWS = 8  # sampled formats: the gradient error of the mean of this many independent draws (its bias shows)
ENCODING_VARIANTS = {  # bytes and error of the encodings alone (no students): measured, then chosen
    "topk_tail k=16 float16, plain ids": dict(logits="topk_tail", k=16, values="float16", indices="plain"),
    "topk_tail k=16 uint16": dict(logits="topk_tail", k=16, values="uint16"),
    "sampled N=12, plain ids": dict(logits="sampled", samples=12, indices="plain"),
}


class Replay(nn.Module):
    """Teacher logits computed once, answered by the rows' content hash: lets every store be filled through
    `write_cache` without running the teacher again (its forward time is measured once, apart)."""

    def __init__(self, logits: torch.Tensor, hashes: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.anchor = logits, nn.Parameter(torch.zeros(1), requires_grad=False)
        self.row = {int(h): i for i, h in enumerate(hashes)}

    def forward(self, input_ids, attention_mask):
        hashes = row_hashes({"input_ids": input_ids, "attention_mask": attention_mask}, INPUTS)
        return self.logits[torch.tensor([self.row[int(h)] for h in hashes])].float()


@torch.no_grad()
def forward_logits(model, data, dtype=torch.float16):
    model.eval()
    return torch.cat([model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.to(dtype)
                      for b in sequential_batches(data, 64)])


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*.npy") if "/train/" in str(p))


def build(teacher, data, settings: CacheSettings, where: Path) -> tuple[CacheStore, float]:
    shutil.rmtree(where, ignore_errors=True)
    start = time.perf_counter()
    write_cache(teacher, {"train": data}, where, settings, {"teacher": "benchmark", "data": "benchmark"}, INPUTS,
                batch_size=64, chunk_rows=2048)
    return CacheStore(where), time.perf_counter() - start


def signal_of(logits: torch.Tensor, settings: CacheSettings, data) -> object:
    """The signal a store of `settings` would hand the loss for these logits (same encode/decode path)."""
    if settings.logits == "full":
        return logits.float()
    if settings.logits == "topk":
        return compress_topk(logits.float(), settings.k, torch.float16)
    keys = row_hashes({k: data.tensors[k] for k in INPUTS}, INPUTS)
    parts = [formats.encode(logits[i:i + 64].float(), settings, keys[i:i + 64]) for i in range(0, len(logits), 64)]
    arrays = {stem: torch.cat([p[stem] for p in parts]) for stem in parts[0]}
    return formats.decode(arrays, settings, logits.shape[-1])


def errors(student_logits: torch.Tensor, teacher_logits: torch.Tensor, signal, mask: torch.Tensor,
           more_draws: list | None = None) -> dict:
    """Loss and gradient (w.r.t. the student's logits) of token_kd from `signal` against the dense teacher's, on
    the counted positions: absolute value error, and relative L2 error of the gradient."""
    loss = TokenKDLoss(chunk_size=512)
    targets = Targets(mask=mask)

    def value_grad(teacher):
        s = student_logits.detach().float().requires_grad_(True)
        value = loss(Outputs(logits=s), Outputs(logits=teacher), targets)
        value.backward()
        return value.item(), s.grad

    dense_value, dense_grad = value_grad(teacher_logits.float())
    value, grad = value_grad(signal)
    out = {"kl_dense": dense_value, "kl": value, "kl_abs_error": abs(value - dense_value),
           "grad_rel_error": float((grad - dense_grad).norm() / dense_grad.norm())}
    if more_draws:
        pairs = [value_grad(other) for other in more_draws]
        mean_value = (value + sum(v for v, _ in pairs)) / (1 + len(pairs))
        mean_grad = (grad + sum(g for _, g in pairs)) / (1 + len(pairs))
        out.update(kl_abs_error_mean_draws=abs(mean_value - dense_value),
                   grad_rel_error_mean_draws=float((mean_grad - dense_grad).norm() / dense_grad.norm()))
    return out


def draws_of(logits: torch.Tensor, settings: CacheSettings, data) -> list:
    """Further independent draws of a sampled signal (other seeds), for the mean-of-draws error."""
    if settings.logits != "sampled":
        return []
    return [signal_of(logits, dataclasses.replace(settings, seed=settings.seed + i), data) for i in range(1, DRAWS)]


@torch.no_grad()
def ece(model, data) -> float:
    model.eval()
    labels, logits = [], []
    for b in sequential_batches(data, 128):
        logits.append(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.flatten(0, 1))
        labels.append(b["labels"].flatten())
    return expected_calibration_error(torch.cat(labels), torch.cat(logits))


def part_lm(args, work: Path, log) -> dict:
    bundle, _ = stdlib_lm(vocab_size=VOCAB, seq_len=SEQ_LEN)
    train_rows, test = bundle.teacher_train, bundle.test
    if args.train_rows:
        train_rows = train_rows.subset(torch.arange(min(args.train_rows, len(train_rows))))
    tokens = train_rows.tensors["input_ids"].numel()
    log(f"data: {len(train_rows)} train rows ({tokens} tokens), {len(test)} test rows, vocab {VOCAB}")
    teacher = tiny_causal_lm("gpt2", layers=4, hidden=256, heads=4, vocab_size=VOCAB, seed=1)
    train(DistillModule(teacher, build_loss([LossTerm(name="ce")]), INPUTS, {}), None, train_rows,
          args.teacher_steps, 1e-3)
    teacher.eval().requires_grad_(False)
    out = {"teacher_perplexity": held_out_perplexity(teacher, test), "teacher_ece": ece(teacher, test),
           "tokens": tokens, "formats": {}, "students": {}}
    log(f"teacher: ppl {out['teacher_perplexity']:.2f}")
    start = time.perf_counter()
    logits = forward_logits(teacher, train_rows)
    out["teacher_forward_s"] = time.perf_counter() - start
    log(f"teacher forward over the training rows: {out['teacher_forward_s']:.1f}s")
    hashes = row_hashes({k: train_rows.tensors[k] for k in INPUTS}, INPUTS)
    replay = Replay(logits, hashes)
    held = test.subset(torch.arange(min(args.held_rows, len(test))))
    held_logits = forward_logits(teacher, held, torch.float32)
    reference = tiny_causal_lm("gpt2", layers=1, hidden=128, heads=4, vocab_size=VOCAB, seed=0)
    train(DistillModule(reference, build_loss([LossTerm(name="ce")]), INPUTS, {}), None, train_rows,
          args.student_steps, 3e-3, seed=0)
    out["students"]["scratch (ce on text)"] = {0: {"perplexity": held_out_perplexity(reference, test),
                                                   "ece": ece(reference, test)}}
    reference.eval()
    with torch.no_grad():
        ref_logits = reference(input_ids=held.tensors["input_ids"],
                               attention_mask=held.tensors["attention_mask"]).logits
    mask = held.tensors["mask"].bool()
    stores = {}
    for label, spec in {**FORMATS, **DRAW_VARIANTS}.items():  # the encoding variants are measured at 32k only
        settings = CacheSettings(**spec)
        store, seconds = build(replay, train_rows, settings, work / label.replace(" ", "_").replace("=", ""))
        signal = signal_of(held_logits, settings, held)
        row = {"settings": settings.as_dict(), "bytes_per_token": disk_bytes(store.directory) / tokens,
               "payload_bytes_per_token_512": formats.bytes_per_position(settings, VOCAB),
               "payload_bytes_per_token_32k": formats.bytes_per_position(settings, VOCAB_32K), "build_s": seconds,
               **errors(ref_logits, held_logits, signal, mask, draws_of(held_logits, settings, held))}
        out["formats"][label] = row
        stores[label] = store
        log(f"{label}: {row['bytes_per_token']:.1f} B/token, build {seconds:.1f}s, KL err {row['kl_abs_error']:.4f}, "
            f"grad err {row['grad_rel_error']:.3f}")
    del replay, logits
    for seed in args.seeds:
        if seed != 0:
            scratch = tiny_causal_lm("gpt2", layers=1, hidden=128, heads=4, vocab_size=VOCAB, seed=seed)
            train(DistillModule(scratch, build_loss([LossTerm(name="ce")]), INPUTS, {}), None, train_rows,
                  args.student_steps, 3e-3, seed=seed)
            out["students"]["scratch (ce on text)"][seed] = {"perplexity": held_out_perplexity(scratch, test),
                                                             "ece": ece(scratch, test)}
        for label in TRAINED:
            store = stores[label]
            source = CachedTeacher(store, INPUTS, sparse=store.settings.logits != "full")
            student = tiny_causal_lm("gpt2", layers=1, hidden=128, heads=4, vocab_size=VOCAB, seed=seed)
            module = DistillModule(student, build_loss([LossTerm(name="token_kd")]), INPUTS, {})
            tps = train(module, source, train_rows, args.student_steps, 3e-3, seed=seed)
            row = {"perplexity": held_out_perplexity(student, test), "ece": ece(student, test), "tokens_per_s": tps}
            out["students"].setdefault(label, {})[seed] = row
            log(f"seed {seed} {label}: ppl {row['perplexity']:.2f}, ece {row['ece']:.4f}, {tps:.0f} tok/s")
    return out


def part_32k(args, work: Path, log) -> dict:
    bundle, tokenizer = stdlib_lm(vocab_size=VOCAB_32K, seq_len=SEQ_LEN)
    reached = tokenizer.get_vocab_size()
    train_rows, test = bundle.teacher_train, bundle.test
    log(f"32k: the BPE reached {reached} tokens; model vocabulary padded to {VOCAB_32K}")
    teacher = tiny_causal_lm("gpt2", layers=2, hidden=128, heads=4, vocab_size=VOCAB_32K, seed=1)
    module = DistillModule(teacher, build_loss([LossTerm(name="ce")]), INPUTS, {})
    train(module, None, train_rows, args.steps_32k_reference, 3e-3)
    reference = copy.deepcopy(teacher).eval()
    train(module, None, train_rows, args.steps_32k - args.steps_32k_reference, 3e-3, seed=1)
    teacher.eval().requires_grad_(False)
    out = {"bpe_vocab_reached": reached, "model_vocab": VOCAB_32K, "teacher_perplexity":
           held_out_perplexity(teacher, test), "reference_perplexity": held_out_perplexity(reference, test),
           "formats": {}}
    rows = train_rows.subset(torch.arange(args.rows_32k))
    tokens = rows.tensors["input_ids"].numel()
    start = time.perf_counter()
    forward_logits(teacher, rows)
    out["teacher_forward_s"], out["tokens"] = time.perf_counter() - start, tokens
    held = test.subset(torch.arange(args.held_rows_32k))
    held_logits = forward_logits(teacher, held, torch.float32)
    with torch.no_grad():
        ref_logits = reference(input_ids=held.tensors["input_ids"],
                               attention_mask=held.tensors["attention_mask"]).logits
    mask = held.tensors["mask"].bool()
    for label, spec in {**FORMATS, **ENCODING_VARIANTS}.items():
        settings = CacheSettings(**spec)
        row = {"settings": settings.as_dict(), "payload_bytes_per_token": formats.bytes_per_position(settings,
                                                                                                      VOCAB_32K)}
        if settings.logits != "full":  # a full 32k store of these rows would be tokens x 64 kB: computed, not written
            store, seconds = build(teacher, rows, settings, work / ("32k_" + label.replace(" ", "_").replace("=", "")))
            row.update(bytes_per_token=disk_bytes(store.directory) / tokens, build_s=seconds)
            shutil.rmtree(store.directory, ignore_errors=True)
        else:
            row.update(bytes_per_token=float(formats.bytes_per_position(settings, VOCAB_32K)), build_s=None)
        row.update(errors(ref_logits, held_logits, signal_of(held_logits, settings, held), mask,
                          draws_of(held_logits, settings, held)))
        out["formats"][label] = row
        log(f"32k {label}: {row['bytes_per_token']:.1f} B/token, KL err {row['kl_abs_error']:.4f}, "
            f"grad err {row['grad_rel_error']:.3f}")
    return out


def summary(values: list[float], digits: int = 2) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def err(row: dict) -> str:
    text = f"{row['kl_abs_error']:.4f} / {row['grad_rel_error']:.3f}"
    if "grad_rel_error_mean_draws" in row:
        text += f" ({DRAWS} draws: {row['kl_abs_error_mean_draws']:.4f} / {row['grad_rel_error_mean_draws']:.3f})"
    return text


def report(r: dict) -> str:
    lm, big = r["lm"], r["32k"]
    dense = sum(v["perplexity"] for v in lm["students"]["full float16"].values()) / len(lm["students"]["full float16"])
    seeds = ", ".join(str(s) for s in r["settings"]["seeds"])
    subset = f" (its first {r['settings']['train_rows']} training rows)" if r["settings"]["train_rows"] else ""
    lines = [
        "# Teacher-cache formats: size, error and the student they train", "",
        f"`{r['command']}` on {r['date']} (CPU, 1 thread, `nice -n 5`; load average at start {r['loadavg_start']}, "
        f"at end {r['loadavg_end']}: the 2 cores are shared with other work, so times are indicative). Wall time "
        f"{r['wall_s'] / 60:.1f} min. Student seeds {seeds} (student initialisation and batch order; the teacher is "
        "seed 1); perplexity and ECE are the mean over seeds (range in brackets).", "",
        f"**Scale of benchmarks/llm.py**: 512-token BPE, 48 tokens per row, {lm['tokens']} training tokens{subset}; "
        "GPT-2 "
        f"4x256 teacher ({r['settings']['teacher_steps']} steps; held-out perplexity {lm['teacher_perplexity']:.2f}, "
        f"ECE {lm['teacher_ece']:.4f}); GPT-2 1x128 students, {r['settings']['student_steps']} steps of batch "
        f"{BATCH}, token_kd forward KL at T = 1, every student from the same initial weights and batches per seed. "
        "Stores written by `write_cache` and read by `CachedTeacher` (the sparse formats reach the loss as "
        f"sparse objects). The teacher's forward pass over the training rows took {lm['teacher_forward_s']:.1f} s "
        "and is not in the build times, which are encoding + writing (the stores are filled from logits computed "
        "once).", "",
        f"**32k vocabulary**: the same corpus's BPE asked for 32000 tokens reached {big['bpe_vocab_reached']} "
        f"(the corpus is small); the model vocabulary is **padded** to {big['model_vocab']}. GPT-2 2x128 teacher "
        f"trained {r['settings']['steps_32k']} steps (perplexity {big['teacher_perplexity']:.1f}); stores of "
        f"{big['tokens']} tokens built with the teacher running (build time includes its forward pass: "
        f"{big['teacher_forward_s']:.1f} s alone). Error at 32k is measured at a reference student (the same model "
        f"after {r['settings']['steps_32k_reference']} steps, perplexity {big['reference_perplexity']:.1f}).", "",
        "Error columns: on held-out test positions, |token_kd(signal) - token_kd(dense teacher)| (nats per "
        "token) and the relative L2 error of the gradient with respect to the student's logits (all held-out "
        "positions together), at a reference student (the scratch student at 512). For sampled formats: one draw "
        f"(what one training step sees: a noisy but unbiased gradient), and in brackets the mean of {DRAWS} "
        "independent draws, whose error shrinks like 1/sqrt(draws) for an unbiased estimate and would stall at "
        "the bias otherwise. The top-k formats' error is a bias: it does not average out over steps.", "",
        "| format | B/token on disk, V=32k | B/token on disk, V=512 | build s (V=512) | build s (V=32k, with "
        "forward) | KL err / grad err (512) | KL err / grad err (32k) | student ppl | vs dense | student ECE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    scratch = lm["students"]["scratch (ce on text)"]
    lines.append(f"| scratch student (no teacher) | - | - | - | - | - | - | "
                 f"{summary([v['perplexity'] for v in scratch.values()])} | "
                 f"{(sum(v['perplexity'] for v in scratch.values()) / len(scratch) / dense - 1) * 100:+.1f}% | "
                 f"{summary([v['ece'] for v in scratch.values()], 3)} |")
    for label, b in big["formats"].items():
        row = lm["formats"].get(label)
        st = lm["students"].get(label)
        ppl = summary([v["perplexity"] for v in st.values()]) if st else "-"
        rel = f"{(sum(v['perplexity'] for v in st.values()) / len(st) / dense - 1) * 100:+.1f}%" if st else "-"
        ec = summary([v["ece"] for v in st.values()], 3) if st else "-"
        build32 = f"{b['build_s']:.1f}" if b.get("build_s") is not None else "(not written)"
        if row is None:
            lines.append(f"| {label} | {b['bytes_per_token']:.1f} | - | - | {build32} | - | {err(b)} | - | - | - |")
            continue
        lines.append(f"| {label} | {b['bytes_per_token']:.1f} | {row['bytes_per_token']:.1f} | {row['build_s']:.1f} "
                     f"| {build32} | {err(row)} | {err(b)} | {ppl} | {rel} | {ec} |")
    for label, row in lm["formats"].items():  # measured at 512 only (other draws of a sampled store)
        if label in big["formats"]:
            continue
        st = lm["students"].get(label, {})
        ppl = summary([v["perplexity"] for v in st.values()]) if st else "-"
        rel = f"{(sum(v['perplexity'] for v in st.values()) / len(st) / dense - 1) * 100:+.1f}%" if st else "-"
        ec = summary([v["ece"] for v in st.values()], 3) if st else "-"
        lines.append(f"| {label} | (as seed 0) | {row['bytes_per_token']:.1f} | {row['build_s']:.1f} | - | {err(row)} "
                     f"| - | {ppl} | {rel} | {ec} |")
    lines += ["", "B/token at 32k for `full float16` is computed (V x 2 bytes), not written. Dense KL at the "
              f"reference student: {lm['formats']['full float16']['kl_dense']:.4f} nats/token (512), "
              f"{big['formats']['full float16']['kl_dense']:.4f} (32k).", "", *paired_table(lm["students"]), "",
              r.get("verdict", ""), ""]
    return "\n".join(lines)


def paired(students: dict, label: str, reference: str = "full float16") -> dict | None:
    """Per-seed relative perplexity difference (%) of `label`'s student from the reference student of the same
    seed (same initial weights, same batches), its mean and a two-sided 95% Student-t interval of the mean."""
    ref = {str(k): v["perplexity"] for k, v in students[reference].items()}
    diffs = [(v["perplexity"] / ref[str(k)] - 1) * 100 for k, v in students[label].items() if str(k) in ref]
    if not diffs:
        return None
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return {"diffs": diffs, "mean": mean, "low": None, "high": None}
    from scipy.stats import t

    sd = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) ** 0.5
    half = t.ppf(0.975, len(diffs) - 1) * sd / len(diffs) ** 0.5
    return {"diffs": diffs, "mean": mean, "low": mean - half, "high": mean + half}


def paired_table(students: dict) -> list[str]:
    """Markdown rows: every student against the dense-teacher student of the same seed."""
    lines = ["Paired against the dense-teacher student of the same seed (same initial weights, same batches): "
             "perplexity difference in % per seed, its mean and the 95% Student-t interval of the mean (with few "
             "seeds the interval is wide; 'detectable' means it excludes 0).", "",
             "| student | per seed (%) | mean (%) | 95% interval (%) | difference detectable | within 3% |",
             "|---|---|---|---|---|---|"]
    for label in students:
        if label == "full float16":
            continue
        p = paired(students, label)
        if p is None:
            continue
        per = ", ".join(f"{d:+.1f}" for d in p["diffs"])
        if p["low"] is None:
            lines.append(f"| {label} | {per} | {p['mean']:+.1f} | - | - (one seed) | "
                         f"{'yes' if p['mean'] <= 3 else 'no'} (one seed) |")
            continue
        detect = "yes" if p["low"] > 0 or p["high"] < 0 else "no"
        within = "yes" if p["high"] <= 3 else ("no" if p["low"] > 3 else "undecided")
        lines.append(f"| {label} | {per} | {p['mean']:+.1f} | {p['low']:+.1f} to {p['high']:+.1f} | {detect} | "
                     f"{within} |")
    return lines


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lm, big = r["lm"], r["32k"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, st in lm["students"].items():
        if label not in lm["formats"] or label not in big["formats"]:
            continue
        ppl = sum(v["perplexity"] for v in st.values()) / len(st)
        x = big["formats"][label]["bytes_per_token"]
        ax.scatter(x, ppl, s=30)
        ax.annotate(label, (x, ppl), fontsize=7, xytext=(4, 2), textcoords="offset points")
    scratch = lm["students"]["scratch (ce on text)"]
    ax.axhline(sum(v["perplexity"] for v in scratch.values()) / len(scratch), color="grey", ls="--", lw=1,
               label="scratch student")
    dense = lm["students"]["full float16"]
    ax.axhline(sum(v["perplexity"] for v in dense.values()) / len(dense) * 1.03, color="red", ls="-.", lw=1,
               label="dense-teacher student + 3%")
    ax.axvline(100, color="red", ls=":", lw=1, label="100 B/token")
    ax.set_xscale("log")
    ax.set_xlabel("bytes per token on disk at a 32k vocabulary (log)")
    ax.set_ylabel("student held-out perplexity (vocab 512 benchmark)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--student-steps", type=int, default=300)
    parser.add_argument("--steps-32k", type=int, default=60)
    parser.add_argument("--steps-32k-reference", type=int, default=15)
    parser.add_argument("--rows-32k", type=int, default=256)
    parser.add_argument("--held-rows", type=int, default=256)
    parser.add_argument("--held-rows-32k", type=int, default=64)
    parser.add_argument("--train-rows", type=int, default=0, help="use only the first N training rows (0: all)")
    parser.add_argument("--quick", action="store_true", help="tiny budget, to check the script runs")
    parser.add_argument("--render", action="store_true",
                        help="rewrite the .md and .png from the results .json (no measuring)")
    parser.add_argument("--verdict", type=Path, help="with --render: a text file whose text becomes the verdict")
    args = parser.parse_args()
    if args.render:
        result = json.loads((RESULTS / "cache_formats.json").read_text())
        if args.verdict:
            result["verdict"] = args.verdict.read_text().strip()
            (RESULTS / "cache_formats.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "cache_formats.md").write_text(report(result))
        plot(result, RESULTS / "cache_formats.png")
        return
    if args.quick:
        args.seeds, args.teacher_steps, args.student_steps, args.steps_32k = [0], 10, 5, 6
        args.steps_32k_reference, args.rows_32k, args.held_rows, args.held_rows_32k = 3, 16, 16, 8
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_start = open("/proc/loadavg").read().split()[:3]

    def log(text):
        print(f"[{time.perf_counter() - t0:6.0f}s] {text}", flush=True)

    with tempfile.TemporaryDirectory(prefix="kdforge-cache-formats-") as tmp:
        result = {"lm": part_lm(args, Path(tmp), log)}
        result["32k"] = part_32k(args, Path(tmp), log)
    result.update(settings={"seeds": args.seeds, "train_rows": args.train_rows, "teacher_steps": args.teacher_steps,
                            "student_steps": args.student_steps, "steps_32k": args.steps_32k,
                            "steps_32k_reference": args.steps_32k_reference, "rows_32k": args.rows_32k,
                            "held_rows": args.held_rows, "held_rows_32k": args.held_rows_32k, "threads": 1},
                  command="nice -n 5 python " + " ".join(["benchmarks/cache_formats.py", *sys.argv[1:]]),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), wall_s=time.perf_counter() - t0,
                  loadavg_start=" ".join(load_start), loadavg_end=" ".join(open("/proc/loadavg").read().split()[:3]))
    text = report(result)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "cache_formats.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "cache_formats.md").write_text(text)
        plot(result, RESULTS / "cache_formats.png")
    print(text)


if __name__ == "__main__":
    main()
