"""Language-model distillation on local text (run on demand, CPU, a few minutes).

    python benchmarks/llm.py [--teacher-steps 400] [--student-steps 300] [--quick] [--memory-only]

Data: the standard library's docstring sentences (`kdforge.llm.data.stdlib_lm`: ~10k sentences, a 512-token
BPE trained in-process on the training rows, 48 tokens per row). Teacher: GPT-2, 4 layers, hidden 256, trained
with cross-entropy. Student: GPT-2, 1 layer, hidden 128. Every student row starts from the same initial
weights and sees the same batches (same seed, same steps); only the objective differs:

* scratch: cross-entropy on the text;
* token_kd with each divergence (online teacher), and forward KL from cached top-k teacher logits;
* sequence-level KD: cross-entropy on teacher-sampled continuations of 4-token prompts.

Reported: held-out perplexity (test rows), training tokens/s, DistillSpec acceptance rate of the student as a
draft for the teacher, the size of full vs top-k cached teacher logits, and the peak memory of chunked vs
naive token-level KL at a 32k vocabulary (synthetic logits, each in a fresh process).
Results: benchmarks/results/llm.md and llm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from kdforge.app.build import build_loss  # noqa: E402
from kdforge.cache.topk import TopK, compress_topk  # noqa: E402
from kdforge.data.tensors import iterate_batches, sequential_batches  # noqa: E402
from kdforge.llm.data import stdlib_lm, tiny_causal_lm  # noqa: E402
from kdforge.llm.seq_kd import Decoding, generate_dataset, prompts_from  # noqa: E402
from kdforge.lm.distillspec import measure_acceptance  # noqa: E402
from kdforge.losses.base import Outputs  # noqa: E402
from kdforge.metrics.task import perplexity, token_nll  # noqa: E402
from kdforge.recipe import LossTerm  # noqa: E402
from kdforge.train.module import DistillModule, OnlineTeacher, standard_step  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
INPUTS = ["input_ids", "attention_mask"]
VOCAB, SEQ_LEN, BATCH, TOP_K, PROMPTS = 512, 48, 32, 16, 3000


def train(module, teacher, data, steps, lr, seed=0, batch_size=BATCH):
    """AdamW with linear warm-up/decay over `steps` batches of `batch_size` rows (order fixed by `seed`); returns
    counted tokens per second. Shared by benchmarks/cache_formats.py and benchmarks/cross_tokenizer.py."""
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / steps))
    module.train()
    tokens, start = 0, time.perf_counter()
    for _, batch in zip(range(steps), iterate_batches(data, batch_size, seed), strict=False):
        terms = standard_step(module, teacher, batch)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        tokens += int(batch["mask"].sum())
    return tokens / (time.perf_counter() - start)


@torch.no_grad()
def held_out_perplexity(model, data):
    model.eval()
    nll, n = 0.0, 0
    for batch in sequential_batches(data, 128):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        part, count = token_nll(batch["labels"], logits)
        nll, n = nll + part, n + count
    return perplexity(nll, n)


class StoredTeacher:
    """Teacher logits computed once over the training rows (float16, (N, L, V)), read back by sample id: the
    same values the online teacher gives, up to float16 rounding, without a teacher forward per variant."""

    def __init__(self, logits: torch.Tensor, row_of_index: dict[int, int]):
        self.logits, self.row_of_index = logits, row_of_index

    def __call__(self, batch):
        rows = torch.tensor([self.row_of_index[int(i)] for i in batch["index"]])
        return Outputs(logits=self.logits[rows].float())


class TopKTeacher:
    """Teacher outputs read from precomputed top-k logits by sample id (what the teacher cache stores)."""

    def __init__(self, store: TopK, row_of_index: dict[int, int]):
        self.store, self.row_of_index = store, row_of_index

    def __call__(self, batch):
        rows = torch.tensor([self.row_of_index[int(i)] for i in batch["index"]])
        s = self.store
        return Outputs(logits=TopK(s.values[rows], s.indices[rows], s.logsumexp[rows], s.vocab_size))


@torch.no_grad()
def teacher_caches(teacher, data):
    """Full float16 logits and top-k entries of the teacher over `data`, and their sizes in bytes."""
    full, parts = [], []
    teacher.eval()
    for batch in sequential_batches(data, 128):
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        full.append(logits.half())
        parts.append(compress_topk(logits, TOP_K))
    store = TopK(torch.cat([p.values for p in parts]), torch.cat([p.indices for p in parts]),
                 torch.cat([p.logsumexp for p in parts]), VOCAB)
    full_logits = torch.cat(full)
    index = {int(i): r for r, i in enumerate(data.tensors["index"])}
    sizes = {"full_fp16_bytes": full_logits.numel() * 2,
             "topk_bytes": sum(t.numel() * t.element_size() for t in (store.values, store.indices, store.logsumexp)),
             "tokens": data.tensors["input_ids"].numel(), "k": TOP_K, "vocab": VOCAB}
    return StoredTeacher(full_logits, index), TopKTeacher(store, index), sizes


PEAK_SCRIPT = r"""
import sys, torch, torch.nn.functional as F
from kdforge.losses.token_kd import TokenKDLoss
from kdforge.losses.base import Outputs, Targets
torch.set_num_threads(1)
mode, n, v = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(0)
s = torch.randn(n, v, generator=g).requires_grad_(True); t = torch.randn(n, v, generator=g)
def hwm():  # peak resident set in KiB (VmHWM starts afresh at exec, unlike ru_maxrss)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
base = hwm()
if mode == "naive":
    loss = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="batchmean", log_target=True)
else:
    loss = TokenKDLoss(chunk_size=int(mode))(Outputs(logits=s), Outputs(logits=t), Targets())
loss.backward()
print((hwm() - base) * 1024, loss.item())
"""


def peak_memory(tokens=2048, vocab=32000):
    """Extra peak resident memory (bytes) of forward + backward beyond the two input logit tensors. Blocks over
    1 MiB are mmapped (MALLOC_MMAP_THRESHOLD_), so freed temporaries leave RSS and the peak is of live tensors."""
    out = {"tokens": tokens, "vocab": vocab, "logits_bytes": tokens * vocab * 4}
    for mode in ("naive", "256"):
        res = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, mode, str(tokens), str(vocab)],
                             capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                          "MALLOC_MMAP_THRESHOLD_": "1048576"})
        peak, value = res.stdout.split()
        out["naive" if mode == "naive" else "chunked_256"] = {"extra_peak_bytes": int(peak), "loss": float(value)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--student-steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="tiny budget, to check the script runs")
    parser.add_argument("--memory-only", action="store_true",
                        help="re-measure only the 32k-vocabulary peak memory into the existing results")
    args = parser.parse_args()
    if args.memory_only:
        result = json.loads((RESULTS / "llm.json").read_text())
        result["peak_memory_32k"] = peak_memory()
        (RESULTS / "llm.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "llm.md").write_text(report(result))
        print(report(result))
        return
    if args.quick:
        args.teacher_steps, args.student_steps = 20, 10
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    bundle, _ = stdlib_lm(vocab_size=VOCAB, seq_len=SEQ_LEN)
    train_rows, test = bundle.teacher_train, bundle.test
    print(f"data: {len(train_rows)} train rows, {len(test)} test rows, {SEQ_LEN} tokens, vocab {VOCAB}", flush=True)

    teacher = tiny_causal_lm("gpt2", layers=4, hidden=256, heads=4, vocab_size=VOCAB, seed=1)
    ce = build_loss([LossTerm(name="ce")])
    teacher_tps = train(DistillModule(teacher, ce, INPUTS, {}), None, train_rows, args.teacher_steps, 1e-3)
    teacher.eval().requires_grad_(False)
    rows = {"teacher (4 layers, hidden 256)": {"perplexity": held_out_perplexity(teacher, test),
                                               "tokens_per_s": teacher_tps}}
    print(f"teacher: ppl {rows['teacher (4 layers, hidden 256)']['perplexity']:.2f} "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)

    online = OnlineTeacher(teacher, INPUTS, {})
    stored, cached, sizes = teacher_caches(teacher, train_rows)
    prompts = prompts_from(train_rows, 4)[:PROMPTS]
    decoding = Decoding("sample", max_new_tokens=SEQ_LEN - 4)
    generated, provenance = generate_dataset(teacher, prompts, decoding, seed=0, batch_size=500)
    print(f"seq-KD: {len(generated)} sampled continuations ({time.perf_counter() - t0:.0f}s)", flush=True)

    variants = {
        "scratch (ce on text)": ([{"name": "ce"}], None, train_rows),
        "token_kd forward_kl (online teacher)": ([{"name": "token_kd", "divergence": "forward_kl"}], online,
                                                 train_rows),
        "token_kd forward_kl": ([{"name": "token_kd", "divergence": "forward_kl"}], stored, train_rows),
        "token_kd forward_kl + ce": ([{"name": "token_kd"}, {"name": "ce"}], stored, train_rows),
        "token_kd reverse_kl": ([{"name": "token_kd", "divergence": "reverse_kl"}], stored, train_rows),
        "token_kd jsd (beta 0.5)": ([{"name": "token_kd", "divergence": "jsd", "beta": 0.5}], stored, train_rows),
        "token_kd tv": ([{"name": "token_kd", "divergence": "tv"}], stored, train_rows),
        "token_kd skew_kl (alpha 0.1)": ([{"name": "token_kd", "divergence": "skew_kl", "alpha": 0.1}], stored,
                                         train_rows),
        f"token_kd forward_kl, cached top-{TOP_K}": ([{"name": "token_kd"}], cached, train_rows),
        "seq-KD (ce on teacher samples)": ([{"name": "ce"}], None, generated),
    }
    for label, (terms, source, data) in variants.items():
        student = tiny_causal_lm("gpt2", layers=1, hidden=128, heads=4, vocab_size=VOCAB, seed=0)
        module = DistillModule(student, build_loss([LossTerm(**t) for t in terms]), INPUTS, {})
        tps = train(module, source, data, args.student_steps, 3e-3)
        acceptance = measure_acceptance(student, teacher, test, INPUTS, gammas=(3, 5))
        rows[label] = {"perplexity": held_out_perplexity(student, test), "tokens_per_s": tps,
                       "acceptance_rate": acceptance["acceptance_rate"],
                       "greedy_acceptance_rate": acceptance["greedy_acceptance_rate"],
                       "speedup_gamma5": acceptance["expected_speedup"][5], "cost_ratio": acceptance["cost_ratio"]}
        print(f"{label}: ppl {rows[label]['perplexity']:.2f}, {tps:.0f} tok/s, "
              f"acceptance {acceptance['acceptance_rate']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)

    memory = peak_memory()
    result = {"rows": rows, "cache_sizes": sizes, "peak_memory_32k": memory, "seq_kd_provenance": provenance,
              "settings": {"teacher_steps": args.teacher_steps, "student_steps": args.student_steps, "batch": BATCH,
                           "seq_len": SEQ_LEN, "vocab": VOCAB, "threads": 2},
              "wall_s": time.perf_counter() - t0, "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
              * 1024}
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "llm.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "llm.md").write_text(report(result))
    print(report(result))


def report(r) -> str:
    mb = 1 / 2**20
    lines = ["# Language-model distillation benchmark", "",
             "`python benchmarks/llm.py` (CPU, 2 threads). Standard-library docstring sentences, 512-token BPE, "
             f"48 tokens per row; teacher GPT-2 4x256 trained {r['settings']['teacher_steps']} steps; every "
             f"student is GPT-2 1x128 from the same initial weights, {r['settings']['student_steps']} steps of "
             f"batch {r['settings']['batch']}, same batches. Perplexity on held-out test rows. Acceptance: "
             "DistillSpec's speculative-sampling acceptance rate of the student as a draft for the teacher "
             "(teacher-forced on test rows); speed-up for gamma = 5 with cost ratio = parameter ratio. Rows not "
             "marked 'online teacher' read the teacher's logits computed once (float16) instead of running it every "
             "step, so their tokens/s is the student's step plus the loss. Seq-KD trains on sampled continuations "
             f"of {r['seq_kd_provenance']['prompts']['count']} prompts.", "",
             "| model | held-out perplexity | train tokens/s | acceptance (sampling) | acceptance (greedy) "
             "| expected speed-up, gamma 5 |", "|---|---|---|---|---|---|"]
    for label, row in r["rows"].items():
        extra = (f"{row['acceptance_rate']:.3f} | {row['greedy_acceptance_rate']:.3f} | {row['speedup_gamma5']:.2f}x"
                 if "acceptance_rate" in row else "- | - | -")
        lines.append(f"| {label} | {row['perplexity']:.2f} | {row['tokens_per_s']:.0f} | {extra} |")
    c = r["cache_sizes"]
    lines += ["", f"Teacher logits for the {c['tokens']} training tokens (vocabulary {c['vocab']}): full float16 "
              f"{c['full_fp16_bytes'] * mb:.1f} MiB; top-{c['k']} (float16 values, int16 indices, float32 "
              f"log-sum-exp) {c['topk_bytes'] * mb:.1f} MiB ({c['full_fp16_bytes'] / c['topk_bytes']:.1f}x smaller; "
              f"at a 32k vocabulary the ratio is {c['full_fp16_bytes'] / c['vocab'] * 32000 / c['topk_bytes']:.0f}x).",
              ""]
    m = r["peak_memory_32k"]
    lines += [f"Peak memory of token-level KL, forward + backward, {m['tokens']} tokens x {m['vocab']} vocabulary "
              f"(float32 logits: {m['logits_bytes'] * mb:.0f} MiB each; extra resident memory beyond the inputs, "
              "fresh process each):", "",
              "| implementation | extra peak | loss |", "|---|---|---|",
              f"| naive (F.log_softmax on all tokens + kl_div) | {m['naive']['extra_peak_bytes'] * mb:.0f} MiB "
              f"| {m['naive']['loss']:.5f} |",
              f"| token_kd, chunk_size 256 | {m['chunked_256']['extra_peak_bytes'] * mb:.0f} MiB "
              f"| {m['chunked_256']['loss']:.5f} |", "",
              f"The gradient of the student logits ({m['logits_bytes'] * mb:.0f} MiB) is part of both; the rest"
              " of the chunked peak is per-chunk temporaries (chunk_size x V each). Memory is measured as VmHWM"
              " with blocks over 1 MiB mmapped, so freed temporaries leave the resident set.", "",
              f"Wall time {r['wall_s']:.0f} s. Seq-KD data: {r['seq_kd_provenance']['prompts']['count']} prompts, "
              f"decoding {r['seq_kd_provenance']['decoding']['strategy']}, seed {r['seq_kd_provenance']['seed']}, "
              f"teacher {r['seq_kd_provenance']['teacher_fingerprint'][:12]}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
