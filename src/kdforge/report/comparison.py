"""`kdforge compare RUN_A RUN_B`: two runs' students on the same test rows, by the paired test of
`kdforge.metrics.paired_test`; runs tested on other rows are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdforge.errors import KDForgeError
from kdforge.report.compare import correct_rows, verdict

if TYPE_CHECKING:
    from kdforge.types import TensorData


def rows_fingerprint(data: TensorData) -> str:
    """SHA-256 over the test split's tensors (names, shapes, bytes): two runs are paired only on equal rows."""
    digest = hashlib.sha256()
    for name in sorted(data.tensors):
        tensor = data.tensors[name].contiguous().cpu()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def compare_runs(run_a: str | Path, run_b: str | Path, kind: str = "student",
                 confidence: float | None = None) -> dict[str, Any]:
    """`kdforge compare RUN_A RUN_B`: run A's students against run B's on the same test rows.

    Seeds are paired by position (A's first seed with B's first, ...) up to the shorter list. Runs whose test
    rows differ (another data source, split, or preprocessing) are refused: a paired test needs the same rows.

    Returns:
        {"run_a", "run_b", "kind", "seeds_a", "seeds_b", "accuracy_a", "accuracy_b", **paired_test fields,
        "verdict": the sentence}.
    """
    from kdforge.evaluate import positions, predict_logits
    from kdforge.models import load_saved_model
    from kdforge.report.run import open_run, run_data, student_folder

    runs = [open_run(run_a), open_run(run_b)]
    datas = [run_data(run) for run in runs]
    if any("labels" not in d.test.tensors for d in datas):
        raise KDForgeError("compare: a run without labels (sentence embeddings) has no accuracy to compare; "
                           "compare their `embedding` sections in report.json instead.")
    if rows_fingerprint(datas[0].test) != rows_fingerprint(datas[1].test):
        raise KDForgeError(f"compare: {str(run_a)!r} and {str(run_b)!r} were tested on different rows (data "
                           "source, split or preprocessing differ); a paired test needs the same test rows.")
    seeds = [list(run.recipe.seeds) for run in runs]
    pairs = list(zip(seeds[0], seeds[1], strict=False))
    correct: list[list[np.ndarray]] = [[], []]
    labels = positions(datas[0].test)(datas[0].test.tensors["labels"])
    for side, run in enumerate(runs):
        for seed in (p[side] for p in pairs):
            _, folder = student_folder(run, seed, kind)
            model = load_saved_model(folder, str(folder), run.base_dir)[0]
            logits = predict_logits(model, datas[side].test, run.recipe.student.inputs, run.recipe.eval.batch_size)
            correct[side].append(correct_rows(labels, positions(datas[side].test)(logits)))
    from kdforge.metrics import paired_test

    level = confidence if confidence is not None else runs[0].recipe.eval.confidence
    test = paired_test(correct[0], correct[1], alpha=round(1 - level, 10))
    for (sa, sb), entry in zip(pairs, test["per_seed"], strict=True):
        entry.update(seed_a=sa, seed_b=sb)
    names = (f"run A ({runs[0].recipe.name})", f"run B ({runs[1].recipe.name})")
    sentence = verdict(test, names[0], names[1], f"(A - B, {kind}s, mean over {len(pairs)} seed pair(s))")
    return {"run_a": str(run_a), "run_b": str(run_b), "kind": kind, "seeds_a": seeds[0], "seeds_b": seeds[1],
            **test, "verdict": sentence}

