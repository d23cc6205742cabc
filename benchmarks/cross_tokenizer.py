"""Distilling across tokenizers on local text (run on demand, CPU, 1 thread; about 4 minutes on an idle core).

    nice -n 5 python benchmarks/cross_tokenizer.py [--seeds 0 1 2] [--teacher-steps 1000] [--student-steps 300]
                                                   [--quick]

Data: the standard library's docstring sentences (`kdforge.data.corpus`, ~10k, no download), split 80/10/10.
Two tokenizers are trained here on the training sentences only: the teacher's a 512-token byte-level BPE, the
student's a 1000-token Unigram (metaspace). Every sentence is encoded by both and aligned
(`kdforge.lm.cross_data.paired_rows`); rows are 32 tokens on each side.

Teacher: GPT-2, 2 layers, hidden 128, trained with cross-entropy on its own tokens; its logits over the training
rows are computed once (float16) and read back by sample id. Students: GPT-2, 1 layer, hidden 64, the same
initial weights and the same batches per seed; only the objective differs (models this small because the
benchmark shares two cores with other work and must finish in minutes):

* scratch: cross-entropy on the text (student tokens);
* seq-KD: cross-entropy on teacher-sampled continuations of 4-token prompts, decoded to text and re-tokenized
  with the student's tokenizer (Kim & Rush 2016; the only option kdforge had across tokenizers before);
* uld + ce, span_kl + ce, span_hybrid + ce: the cross-tokenizer losses at aligned span ends, each with weight 1
  beside the cross-entropy.

Measured: held-out bits per byte (summed token NLL in bits / UTF-8 bytes of the text the rows cover, the same
text for every model whatever its tokenizer), per seed; a paired comparison with scratch on the same held-out
texts (per-text bits, averaged over seeds: mean difference with a bootstrap 95% interval and a paired t-test);
the share of the teacher's next-token mass that maps to the student's vocabulary.
Results: benchmarks/results/cross_tokenizer.md and cross_tokenizer.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/llm.py: the shared training loop

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kdforge.app.build import build_loss  # noqa: E402
from kdforge.data.corpus import stdlib_sentences  # noqa: E402
from kdforge.data.lm import encode, split_rows  # noqa: E402
from kdforge.data.lm_tokenizers import train_lm_tokenizer  # noqa: E402
from kdforge.data.tensors import sequential_batches  # noqa: E402
from kdforge.llm.data import tiny_causal_lm  # noqa: E402
from kdforge.llm.seq_kd import Decoding, generate_dataset, prompts_from  # noqa: E402
from kdforge.lm.align import vocab_map  # noqa: E402
from kdforge.lm.cross_data import TEACHER_KEYS, paired_rows, teacher_view  # noqa: E402
from kdforge.losses.base import Outputs  # noqa: E402
from kdforge.metrics.task import bits_per_byte  # noqa: E402
from kdforge.recipe import LossTerm  # noqa: E402
from kdforge.train.module import DistillModule, OnlineTeacher  # noqa: E402
from llm import train as llm_train  # noqa: E402

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
INPUTS = ["input_ids", "attention_mask"]
TEACHER_INPUTS = {"input_ids": TEACHER_KEYS["input_ids"], "attention_mask": TEACHER_KEYS["attention_mask"]}
TEACHER = "teacher (BPE 512, GPT-2 2x128)"
TEACHER_VOCAB, STUDENT_VOCAB, SEQ_LEN, BATCH, PROMPTS = 512, 1000, 32, 16, 600


def train(module, teacher, data, steps, lr, seed):
    """benchmarks/llm.py's loop (AdamW, linear warm-up/decay, clipping) at this benchmark's batch size."""
    llm_train(module, teacher, data, steps, lr, seed=seed, batch_size=BATCH)


@torch.no_grad()
def row_bits(model, data, keys=TEACHER_KEYS) -> np.ndarray:
    """(N,) summed next-token NLL in bits of each row, the model reading `keys` (its own tokens)."""
    model.eval()
    out = []
    for batch in sequential_batches(data, 128):
        logits = model(input_ids=batch[keys["input_ids"]], attention_mask=batch[keys["attention_mask"]]).logits
        labels = batch[keys["labels"]]
        logp = torch.log_softmax(logits.double(), -1)
        keep = labels != -100
        nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
        out.append((nll.sum(1) / np.log(2)).numpy())
    return np.concatenate(out)


class StoredTeacher:
    """The teacher's logits over the training rows computed once (float16) and read back by sample id: what the
    online teacher (`OnlineTeacher` with the inputs mapping) gives, up to float16 rounding, without a teacher
    forward per step and variant."""

    @torch.no_grad()
    def __init__(self, teacher, rows):
        online = OnlineTeacher(teacher, TEACHER_INPUTS, {})
        self.logits = torch.cat([online(batch).logits.half() for batch in sequential_batches(rows, 256)])
        self.row_of = {int(i): r for r, i in enumerate(rows.tensors["index"])}

    def __call__(self, batch):
        rows = torch.tensor([self.row_of[int(i)] for i in batch["index"]])
        return Outputs(logits=self.logits[rows].float())


STUDENT_KEYS = {"input_ids": "input_ids", "attention_mask": "attention_mask", "labels": "labels"}


def paired(bits: np.ndarray, scratch: np.ndarray, n_bytes: np.ndarray, seed: int = 0) -> dict:
    """Per-text bits (seed means) of a variant vs scratch on the same texts: mean difference in bits per byte,
    a bootstrap 95% interval over texts, and a paired t-test on per-text bits."""
    from scipy import stats

    diff = bits - scratch
    rng = np.random.default_rng(seed)
    boot = [diff[idx].sum() / n_bytes[idx].sum() for idx in rng.integers(0, len(diff), (2000, len(diff)))]
    return {"delta_bpb": float(diff.sum() / n_bytes.sum()), "ci95": [float(np.percentile(boot, 2.5)),
                                                                     float(np.percentile(boot, 97.5))],
            "t_test_p": float(stats.ttest_rel(bits, scratch).pvalue),
            "texts_better": int((diff < 0).sum()), "texts": len(diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-steps", type=int, default=1000)
    parser.add_argument("--student-steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="tiny budget, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.teacher_steps, args.student_steps, args.seeds = 20, 10, [0]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    load_start = open("/proc/loadavg").read().split()[:3]

    sentences = stdlib_sentences(seed=0)
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(0))
    held = int(round(len(sentences) * 0.1)) * 2
    train_texts = [sentences[i] for i in order[held:].tolist()]
    teacher_tok = train_lm_tokenizer(train_texts, "bpe", TEACHER_VOCAB)
    student_tok = train_lm_tokenizer(train_texts, "unigram", STUDENT_VOCAB)
    bundle = split_rows(paired_rows(sentences, student_tok, teacher_tok, SEQ_LEN), 0.1, 0.1, 0)
    mapping = vocab_map(student_tok, teacher_tok)
    train_rows, test = bundle.teacher_train, bundle.test
    n_bytes = test.tensors["text_bytes"].numpy()
    print(f"data: {len(train_rows)} train rows, {len(test)} test rows ({int(n_bytes.sum())} bytes); "
          f"{int((mapping >= 0).sum())} of {TEACHER_VOCAB} teacher tokens map ({time.perf_counter() - t0:.0f}s)",
          flush=True)

    teacher = tiny_causal_lm("gpt2", layers=2, hidden=128, heads=4, vocab_size=TEACHER_VOCAB, seed=1)
    train(DistillModule(teacher, build_loss([LossTerm(name="ce")]), INPUTS, {}), None, teacher_view(train_rows),
          args.teacher_steps, 1e-3, seed=0)
    teacher.eval().requires_grad_(False)
    teacher_bits = row_bits(teacher, test)
    result_rows = {TEACHER: {"bpb": [bits_per_byte(teacher_bits.sum() * np.log(2),
                                                                            int(n_bytes.sum()))]}}
    print(f"teacher: {result_rows[TEACHER]['bpb'][0]:.4f} bpb "
          f"({time.perf_counter() - t0:.0f}s)", flush=True)

    # sequence-level KD across tokenizers: teacher text, re-tokenized for the student
    prompts = prompts_from(teacher_view(train_rows), 4)[:PROMPTS]
    generated, provenance = generate_dataset(teacher, prompts, Decoding("sample", max_new_tokens=SEQ_LEN - 4),
                                             seed=0, batch_size=500)
    texts = teacher_tok.decode_batch(generated.tensors["input_ids"].tolist(), skip_special_tokens=True)
    seq_rows = encode([t.strip() for t in texts], student_tok, SEQ_LEN)
    print(f"seq-KD: {len(seq_rows)} sampled texts ({time.perf_counter() - t0:.0f}s)", flush=True)

    online = StoredTeacher(teacher, train_rows)
    print(f"teacher logits stored for the training rows ({time.perf_counter() - t0:.0f}s)", flush=True)
    variants = {
        "scratch (ce)": ([{"name": "ce"}], None, train_rows),
        "seq-KD (ce on teacher samples, re-tokenized)": ([{"name": "ce"}], None, seq_rows),
        "uld + ce": ([{"name": "uld"}, {"name": "ce"}], online, train_rows),
        "span_kl + ce": ([{"name": "span_kl"}, {"name": "ce"}], online, train_rows),
        "span_hybrid + ce": ([{"name": "span_hybrid"}, {"name": "ce"}], online, train_rows),
    }
    per_text: dict[str, list[np.ndarray]] = {label: [] for label in variants}
    result_rows.update({label: {"bpb": []} for label in variants})
    mapped_mass = []
    for seed in args.seeds:  # seed-major: after each seed every variant has a result (partial results are written)
        for label, (terms, source, data) in variants.items():
            student = tiny_causal_lm("gpt2", layers=1, hidden=64, heads=2, vocab_size=STUDENT_VOCAB, seed=100 + seed)
            loss = build_loss([LossTerm(**t) for t in terms])
            for term in loss.terms.values():
                if hasattr(term, "set_vocab_map"):
                    term.set_vocab_map(mapping)
            train(DistillModule(student, loss, INPUTS, {}), source, data, args.student_steps, 3e-3, seed=seed)
            for term in loss.terms.values():
                if getattr(term, "last_mapped_mass", None) is not None:
                    mapped_mass.append(term.last_mapped_mass)
            bits = row_bits(student, test, STUDENT_KEYS)
            per_text[label].append(bits)
            result_rows[label]["bpb"].append(bits_per_byte(bits.sum() * np.log(2), int(n_bytes.sum())))
            print(f"{label} seed {seed}: {result_rows[label]['bpb'][-1]:.4f} bpb ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
            runs = sum(len(v) for v in per_text.values())
            status = "complete" if runs == len(variants) * len(args.seeds) else \
                f"partial: {runs} of {len(variants) * len(args.seeds)} student runs"
            result = summarise(result_rows, per_text, n_bytes, mapped_mass, mapping, args, provenance, len(test),
                               load_start, t0, status)
            if not args.quick:
                RESULTS.mkdir(exist_ok=True)
                (RESULTS / "cross_tokenizer.json").write_text(json.dumps(result, indent=2) + "\n")
                (RESULTS / "cross_tokenizer.md").write_text(report(result))
    print(report(result))


def summarise(result_rows, per_text, n_bytes, mapped_mass, mapping, args, provenance, test_texts, load_start, t0,
              status) -> dict:
    """The results so far: per row the seeds' bits per byte, their mean and range, and the paired comparison."""
    rows = {}
    for label, row in result_rows.items():
        if not row["bpb"]:
            continue
        rows[label] = {"bpb": row["bpb"], "mean": float(np.mean(row["bpb"])), "min": min(row["bpb"]),
                       "max": max(row["bpb"])}
        if label in per_text and label != "scratch (ce)":
            k = min(len(per_text[label]), len(per_text["scratch (ce)"]))  # the seeds both have
            rows[label]["vs_scratch"] = paired(np.mean(per_text[label][:k], axis=0),
                                               np.mean(per_text["scratch (ce)"][:k], axis=0), n_bytes)
            rows[label]["vs_scratch"]["per_seed_delta_bpb"] = [
                a - b for a, b in zip(row["bpb"][:k], result_rows["scratch (ce)"]["bpb"][:k], strict=True)]
    return {
        "status": status,
        "rows": rows,
        "mapped_teacher_mass_last_batch_mean": float(np.mean(mapped_mass)) if mapped_mass else None,
        "mapped_teacher_tokens": int((mapping >= 0).sum()),
        "settings": {"seeds": args.seeds, "teacher_steps": args.teacher_steps, "student_steps": args.student_steps,
                     "batch": BATCH, "seq_len": SEQ_LEN, "teacher_vocab": TEACHER_VOCAB,
                     "student_vocab": STUDENT_VOCAB, "threads": 1, "test_texts": test_texts,
                     "test_bytes": int(n_bytes.sum()), "seq_kd_prompts": PROMPTS},
        "seq_kd_provenance": provenance,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": load_start, "loadavg_end": open("/proc/loadavg").read().split()[:3],
        "command": "nice -n 5 python " + " ".join(["benchmarks/cross_tokenizer.py", *sys.argv[1:]]),
        "wall_s": time.perf_counter() - t0,
    }


def report(r) -> str:
    s = r["settings"]
    lines = ["# Cross-tokenizer distillation benchmark", "", f"Status: {r['status']}.", "",
             f"`{r['command']}` ({r['date']}; CPU, 1 thread; load average {' '.join(r['loadavg_start'])} at the "
             f"start, {' '.join(r['loadavg_end'])} at the end: the cores are shared, so wall times are not "
             f"timings). Standard-library docstring sentences; teacher tokenizer a {s['teacher_vocab']}-token "
             f"byte-level BPE, student tokenizer a {s['student_vocab']}-token Unigram, both trained here on the "
             f"training sentences; {s['seq_len']} tokens per row on each side. Teacher GPT-2 2x128 trained "
             f"{s['teacher_steps']} steps; students GPT-2 1x64, {s['student_steps']} steps of batch {s['batch']}, "
             f"same initial weights and batches per seed (seeds {s['seeds']}). Held-out: {s['test_texts']} test "
             f"texts, {s['test_bytes']} UTF-8 bytes. Seq-KD: {s['seq_kd_prompts']} sampled continuations. "
             f"{r['mapped_teacher_tokens']} of {s['teacher_vocab']} teacher "
             "tokens are spelt the same in the student's vocabulary; at the aligned span ends of the training "
             f"batches they carry {r['mapped_teacher_mass_last_batch_mean'] or float('nan'):.1%} of the teacher's "
             "next-token mass "
             "(mean over the span_kl / span_hybrid runs' last batches).", "",
             "| model | bits per byte, mean over seeds | range | Δ vs scratch (paired, 95% CI) | paired t-test p "
             "| texts better | seeds better |", "|---|---|---|---|---|---|---|"]
    for label, row in r["rows"].items():
        if "vs_scratch" in row:
            v = row["vs_scratch"]
            seeds = v["per_seed_delta_bpb"]
            extra = (f"{v['delta_bpb']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | {v['t_test_p']:.2g} | "
                     f"{v['texts_better']}/{v['texts']} | {sum(d < 0 for d in seeds)}/{len(seeds)}")
        else:
            extra = "- | - | - | -"
        lines.append(f"| {label} | {row['mean']:.4f} | {row['min']:.4f} to {row['max']:.4f} | {extra} |")
    lines += ["", "Δ: the variant's held-out bits per byte minus scratch's, per text averaged over the seeds, "
              "summed over texts; negative is better. The interval is a bootstrap over texts (2000 resamples); "
              "the t-test is on per-text bits; both count the variation over texts, not over seeds (seeds better: "
              "seeds whose own bits per byte beat scratch's with the same seed). Seeds vary the student's initial "
              f"weights and batch order, not the teacher. Wall time {r['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
