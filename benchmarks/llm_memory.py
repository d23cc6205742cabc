"""Extra peak memory and step time of token-level KD at language-model sizes: naive, chunked `token_kd`, and
`fused_token_kd` (the logits never built).

Each (method, tokens, vocabulary) case runs in a fresh Python process. The process allocates its inputs (student
hidden states (N, H) and output weight (V, H) with gradients, teacher hidden states and weight), resets the
kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`), takes VmRSS as the baseline, runs one step
(forward + backward from the hidden states: the student's and teacher's logit matmuls are part of every
method), and reads VmHWM: extra peak = VmHWM - baseline. Step time is the median of the following `--repeats`
steps. Forward KL at T = 1, every token counted, float32, torch threads 1.

    naive     z = h Wᵀ for both models, F.kl_div(log_softmax(z_s), log_softmax(z_t)), autograd
    chunked   z = h Wᵀ for both models, then token_kd (chunk_size 1024)
    fused     fused_token_kd from both models' LinearHead (default chunk: 2^22 / V tokens)

A case whose expected extra peak (bytes per logit measured at the smallest size, times N x V) exceeds
`--max-gib` is not run; its expected bytes are reported instead.

    nice -n 5 python benchmarks/llm_memory.py            (writes benchmarks/results/llm_memory.{md,json})
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TOKENS = (2048, 4096, 8192)
VOCABS = (32768, 131072)
METHODS = ("naive", "chunked", "fused")
HIDDEN = 256
SEED = 0


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def run_case(method: str, tokens: int, vocab: int, hidden: int, repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    from kdforge.losses.base import Outputs, Targets
    from kdforge.losses.fused_linear import FusedTokenKDLoss, LinearHead
    from kdforge.losses.token_kd import TokenKDLoss

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(SEED)
    h_s = (torch.randn(tokens, hidden, generator=g)).requires_grad_(True)
    w_s = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).requires_grad_(True)
    h_t = torch.randn(tokens, hidden, generator=g)
    w_t = torch.randn(vocab, hidden, generator=g) / hidden**0.5
    targets = Targets()
    chunked, fused = TokenKDLoss(chunk_size=1024), FusedTokenKDLoss()

    def step() -> float:
        if method == "naive":
            z_s = h_s @ w_s.T
            with torch.no_grad():
                t = F.log_softmax(h_t @ w_t.T, dim=-1)
            loss = F.kl_div(F.log_softmax(z_s, dim=-1), t, reduction="batchmean", log_target=True)
        elif method == "chunked":
            z_s = h_s @ w_s.T
            with torch.no_grad():
                z_t = h_t @ w_t.T
            loss = chunked(Outputs(logits=z_s), Outputs(logits=z_t), targets)
        else:
            loss = fused(Outputs(logits=LinearHead(h_s, w_s)), Outputs(logits=LinearHead(h_t, w_t)), targets)
        loss.backward()
        value = float(loss.detach())
        h_s.grad = w_s.grad = None
        return value

    _reset_peak()
    baseline = _status("VmRSS")
    start = time.perf_counter()
    value = step()
    first = time.perf_counter() - start
    peak = _status("VmHWM")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"method": method, "tokens": tokens, "vocab": vocab, "hidden": hidden, "loss": value,
            "extra_peak_bytes": peak - baseline, "baseline_rss_bytes": baseline, "first_step_s": first,
            "step_s": statistics.median(times) if times else first, "steps_timed": len(times), "ran": True}


def child(method: str, tokens: int, vocab: int, hidden: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--case", method, str(tokens), str(vocab), "--hidden", str(hidden),
               "--repeats", str(repeats)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"method": method, "tokens": tokens, "vocab": vocab, "hidden": hidden, "ran": False,
                "error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def summary(rows: list[dict]) -> str:
    """The targets, checked: fused extra peak <= 1/8 of naive at the largest vocabulary, fused step time <= the
    chunked loss's wherever both ran."""
    by = {(r["method"], r["tokens"], r["vocab"]): r for r in rows}
    largest = max(r["vocab"] for r in rows)
    lines = []
    for (method, tokens, vocab), fused in sorted(by.items()):
        if method != "fused" or not fused["ran"]:
            continue
        naive, chunked = by[("naive", tokens, vocab)], by[("chunked", tokens, vocab)]
        naive_bytes = naive["extra_peak_bytes"] if naive["ran"] else naive.get("expected_bytes")
        parts = []
        if vocab == largest and naive_bytes:
            ratio = naive_bytes / fused["extra_peak_bytes"]
            parts.append(f"memory 1/{ratio:.0f} of naive{'' if naive['ran'] else ' (expected)'} "
                         f"({'meets' if ratio >= 8 else 'misses'} the 1/8 target)")
        if chunked["ran"]:
            speed = fused["step_s"] / chunked["step_s"]
            parts.append(f"step time {speed:.2f}x the chunked loss's "
                         f"({'meets' if speed <= 1.0 else 'misses'} the no-slower target)")
        if parts:
            lines.append(f"- {tokens} tokens x {vocab}: fused " + "; ".join(parts) + ".")
    return "\n".join(lines)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Token-level KD at language-model sizes: extra peak memory and step time",
        "",
        f"Date: {meta['date']}. Machine: {meta['machine']}, {meta['cpus']} CPUs shared with other work (load "
        f"average before: {meta['load_before']}, after: {meta['load_after']}), torch {meta['torch']}, "
        "1 torch thread per process. Command: `" + meta["command"] + "`.",
        "",
        "Forward KL at T = 1 from hidden states (N x H, H = "
        f"{meta['hidden']}) and output weights (V x H) of a student and a teacher, float32, every token counted, "
        f"seed {SEED}. Each case is a fresh process: inputs allocated, the kernel's peak-RSS counter reset "
        "(`/proc/self/clear_refs` = 5), baseline = VmRSS; one forward + backward; extra peak = VmHWM - "
        f"baseline. Step time: median of {meta['repeats']} further steps (the first step's time when 0). A case "
        f"whose expected extra peak exceeds {meta['max_gib']} GiB (bytes per logit measured at the smallest "
        "size x N x V) is not run: the expected size is shown in italics. Times are wall-clock on a shared "
        "machine: compare within a row; with few timed steps under a high load they vary by tens of percent from "
        "step to step (first_step_s against step_s in the .json), so ratios near 1 are within that noise. "
        "glibc's default allocator settings. Every extra peak includes the student "
        "weight's gradient (V x H float32: 32 MiB at 32k, 128 MiB at 128k), which is most of the fused loss's; the "
        "rest is one chunk's temporaries. Token counts run: " + ", ".join(map(str, meta["tokens"]))
        + "; vocabularies: " + ", ".join(map(str, meta["vocabs"])) + ".",
        "",
        "| tokens | vocab | naive extra peak GiB | chunked token_kd GiB | fused GiB | fused / naive | naive s | "
        "chunked s | fused s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["method"], r["tokens"], r["vocab"]): r for r in rows}
    for vocab in meta["vocabs"]:
        for tokens in meta["tokens"]:
            cells = []
            for method in METHODS:
                r = by[(method, tokens, vocab)]
                cells.append(gib(r["extra_peak_bytes"]) if r["ran"] else f"*{gib(r['expected_bytes'])} (expected)*"
                             if "expected_bytes" in r else "failed")
            naive, fused = by[("naive", tokens, vocab)], by[("fused", tokens, vocab)]
            n_bytes = naive.get("extra_peak_bytes") if naive["ran"] else naive.get("expected_bytes")
            ratio = f"1/{n_bytes / fused['extra_peak_bytes']:.0f}" if fused["ran"] and n_bytes else "-"
            ratio += "" if naive["ran"] or ratio == "-" else " (expected)"
            times = [f"{by[(m, tokens, vocab)]['step_s']:.2f}" if by[(m, tokens, vocab)]["ran"] else "-"
                     for m in METHODS]
            lines.append(f"| {tokens} | {vocab} | " + " | ".join(cells) + f" | {ratio} | " + " | ".join(times) + " |")
    lines += ["", "Targets (fused extra peak <= 1/8 of naive at the largest vocabulary; fused step time no worse "
              "than chunked token_kd):", "", summary(rows), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", nargs=3, metavar=("METHOD", "TOKENS", "VOCAB"))
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS))
    parser.add_argument("--vocabs", type=int, nargs="+", default=list(VOCABS))
    parser.add_argument("--max-gib", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "llm_memory")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(markdown(saved["rows"], saved["meta"]))
        return
    if args.case:
        method, tokens, vocab = args.case[0], int(args.case[1]), int(args.case[2])
        print(json.dumps(run_case(method, tokens, vocab, args.hidden, args.repeats)))
        return
    import torch

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    rows, per_logit = [], {}
    for vocab in sorted(args.vocabs):
        for tokens in sorted(args.tokens):
            for method in METHODS:
                expected = per_logit.get(method, 0.0) * tokens * vocab
                if expected > args.max_gib * 2**30:
                    row = {"method": method, "tokens": tokens, "vocab": vocab, "hidden": args.hidden, "ran": False,
                           "expected_bytes": expected, "why": f"expected extra peak above {args.max_gib} GiB"}
                else:
                    row = child(method, tokens, vocab, args.hidden, args.repeats)
                    if row["ran"] and method not in per_logit:
                        per_logit[method] = row["extra_peak_bytes"] / (tokens * vocab)
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_before": " ".join(load_before),
            "load_after": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "torch": torch.__version__, "hidden": args.hidden, "repeats": args.repeats, "max_gib": args.max_gib,
            "tokens": sorted(args.tokens), "vocabs": sorted(args.vocabs), "seed": SEED,
            "bytes_per_logit": per_logit,
            "command": "nice -n 5 python benchmarks/llm_memory.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, meta))


if __name__ == "__main__":
    main()
