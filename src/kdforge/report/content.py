"""What the report says, as a list of sections of blocks (`report.blocks`); `markdown.py` and `html.py` only
render them."""

from __future__ import annotations

from typing import Any

from kdforge.report.blocks import Block, Section, _cost_blocks, _cost_section, _ms, _size, caption, pct  # noqa: F401
from kdforge.report.compare import kd_verdict
from kdforge.report.embedding_content import embedding_sections, evaluation_note


def summary_sections(report: dict[str, Any]) -> list[Section]:
    if report.get("task") == "embedding":  # label-free run: no accuracy, agreement or KD gain (report/embedding.py)
        return embedding_sections(report)
    data, teacher, student = report["data"], report["teacher"], report["student"]
    scratch = report.get("scratch")
    n_seeds = len(report["seeds"])
    intro = (
        f"Data: `{data['source']}`: {data['train']} training samples ({data['student_labelled']} labelled for the "
        f"student, {data['student_train']} inputs it trains on), {data['val']} validation, {data['test']} test, "
        f"{data['num_classes']} classes. Losses: "
        + ", ".join(f"`{t['name']}` x{t['weight']:g}" for t in report["losses"]) + f". Seeds: {report['seeds']}."
    )
    rows = [["teacher", f"{teacher['params']:,}", pct(teacher["accuracy"]), "-", "-"]]
    if scratch:
        rows.append(["scratch student", f"{scratch['params']:,}",
                     f"{pct(scratch['accuracy'])} ± {pct(scratch['accuracy_std'])}", pct(scratch["agreement"]),
                     pct(scratch["agreement_lower_95"])])
    rows.append(["distilled student", f"{student['params']:,}",
                 f"{pct(student['accuracy'])} ± {pct(student['accuracy_std'])}", pct(student["agreement"]),
                 pct(student["agreement_lower_95"])])
    warnings: list[Block] = [("p", f"**Training diverged.** {e['message']}") for e in report.get("divergence", [])]
    warnings += [("p", f"**Validation set too small to choose a step.** {e['message']}")
                 for e in report.get("selection", []) if "message" in e]
    summary: list[Block] = [
        *warnings,
        ("p", intro),
        ("table", ["model", "params", "test accuracy (mean ± std)", "agreement with teacher", "95% lower bound"],
         rows, "lrrrr"),
    ]
    fidelity: list[Block] = [(
        "p",
        f"With 95% confidence, every distilled student here agrees with the teacher's top-1 prediction on at least "
        f"{pct(student['agreement_lower_95'])} of inputs drawn like the {data['test']} test samples "
        f"(one-sided exact Clopper-Pearson bound; the weakest of {n_seeds} seed(s)).",
    )]
    if scratch and "kd_gain_test" in report:  # the verdict comes from the paired test, never from the gap alone
        fidelity.append(("p", kd_verdict(report["kd_gain_test"])))
    if "bits_per_byte" in student:  # causal LMs: tokenizer-independent, so models with other tokenizers compare
        bpb = [f"{name} {m['bits_per_byte']:.4f}" for name, m in
               (("teacher", teacher), ("scratch student", scratch or {}), ("distilled student", student))
               if "bits_per_byte" in m]
        fidelity.append(("p", "Held-out bits per byte (summed next-token NLL in bits over the UTF-8 bytes of the "
                              f"test text; lower is better, whatever the tokenizer): {', '.join(bpb)}."))
    note = evaluation_note(report)
    if note is not None:  # skipped by design or failed, said apart
        fidelity.append(("p", note))
    if "accuracy_last" in student:  # `select: best`: the kept step beside the last one, seed by seed
        summary += _best_vs_last_blocks(student, scratch)
    if "student_init" in report:
        summary.append(("p", student_init_line(report["student_init"])))
    sections: list[Section] = [("Summary", summary), ("Fidelity", fidelity)]
    if "fidelity" in report:
        fidelity += _pac_blocks(report)
        sections += _detail_sections(report)
    if "methods" in report:
        sections.append(("Method measurements", _method_blocks(report["methods"])))
    sections.append(("Per seed", _per_seed_blocks(report)))
    return sections


def _best_vs_last_blocks(student: dict[str, Any], scratch: dict[str, Any] | None) -> list[Block]:
    rows = []
    for name, summary in [("distilled", student)] + ([("scratch", scratch)] if scratch else []):
        for m in summary["per_seed"]:
            if "accuracy_last" in m:
                kept = f"{m['best_step']}" if m.get("best_step") is not None else "-"
                rows.append([str(m["seed"]), name, f"{kept} of {m.get('steps', '-')}", pct(m["accuracy"]),
                             pct(m["accuracy_last"]), pct(m["agreement"]), pct(m.get("agreement_last"))])
    return [("p", "`select: best` kept the step with the best validation score; the last step's test figures "
                  "beside it (same test rows):"),
            ("table", ["seed", "run", "kept step", "test accuracy (kept)", "test accuracy (last)",
                       "agreement (kept)", "agreement (last)"], rows, "rlrrrrr")]


def student_init_line(init: dict[str, Any]) -> str:
    """Where both students (distilled and scratch) started: the teacher's layers, or a pre-trained model."""
    if init["init"] == "from_teacher":
        args = ", ".join(f"{k}={v}" for k, v in init["args"].items()) or "defaults"
        return f"Student initialisation: built from the teacher (student_from_teacher, {args}); the distilled and " \
               "scratch students start from these same weights."
    p = init["pretrain"]
    val = f", val loss {p['val_loss']:.3f}, val accuracy {pct(p['val_accuracy'])}" if "val_loss" in p else ""
    loss = f", train loss {p['first_loss']:.3f} -> {p['last_loss']:.3f}" if "last_loss" in p else ""
    return (f"Student initialisation: pre-trained (well-read student, Turc et al. 2019) on `{p['source']}` for "
            f"{p['steps']} steps{loss}{val}; {init['copied']} of {init['student_tensors']} tensors copied into both "
            "the distilled and the scratch student, so scratch is pre-training + fine-tuning.")


def _method_blocks(methods: dict[str, dict[str, Any]]) -> list[Block]:
    """Early-exit curves and DistillSpec acceptance, as the methods measured them after training."""
    blocks: list[Block] = []
    for seed, measured in methods.items():
        exits = measured.get("multi_exit")
        if exits:
            rows = [[f"{p['threshold']:g}", pct(p["accuracy"]), f"{p['mean_exit']:.2f}", _ms(p["latency_ms"]),
                     f"{p['speedup']:.2f}x"] for p in exits["curve"]]
            blocks += [("p", f"Seed {seed}, early exit at {', '.join(exits['exits'])} (entropy threshold; "
                             "batch size 1; mean exit 0 = always the first exit, "
                             f"{len(exits['exits'])} = the full network):"),
                       ("table", ["threshold", "accuracy", "mean exit", "latency", "speed-up"], rows, "rrrrr")]
        for name in ("token_kd", "gkd"):
            draft = measured.get(name)
            if draft:
                speedups = ", ".join(f"gamma {g}: {s:.2f}x" for g, s in draft["expected_speedup"].items())
                blocks.append(("p", f"Seed {seed}, the student as a speculative-decoding draft for the teacher "
                                    f"(DistillSpec): acceptance rate {pct(draft['acceptance_rate'])} (greedy "
                                    f"{pct(draft['greedy_acceptance_rate'])}) over {draft['positions']:,} "
                                    f"positions; expected speed-up at cost ratio {draft['cost_ratio']:.3f}: "
                                    f"{speedups}."))
    return blocks


def _pac_blocks(report: dict[str, Any]) -> list[Block]:
    f, pac = report["fidelity"], report["fidelity"]["pac"]
    conf = f"{100 * (1 - pac['delta']):g}%"
    needed = [f"{pac['n_needed_exact_min']:,} with zero disagreements (exact binomial)"]
    if pac["n_needed_exact_at_observed_rate"] is not None:
        needed.append(f"{pac['n_needed_exact_at_observed_rate']:,} at the observed disagreement rate (exact binomial)")
    needed.append(f"{pac['n_needed_hoeffding']:,} to estimate the rate within ±{pac['epsilon']:g} without "
                  "assumptions (Hoeffding)")
    return [
        ("p", f"The sections below evaluate the seed-{report['evaluated_seed']} student, the one with the weakest "
              f"agreement bound. {f['statement']}"),
        ("p", f"**PAC check** (epsilon = {pac['epsilon']:g}, delta = {pac['delta']:g}): {pac['verdict']} Samples "
              f"needed to certify disagreement <= {pac['epsilon']:g} at {conf} confidence: " + "; ".join(needed)
              + f". This evaluation set has {pac['n']:,}."),
    ]


def _detail_sections(report: dict[str, Any]) -> list[Section]:
    f = report["fidelity"]
    out: list[Section] = []
    topk = ", ".join(f"top-{k}: {pct(v)}" for k, v in f["top_k_overlap"].items())
    match_rows = [
        ["top-1 agreement (label loyalty)", f"{pct(f['agreement'])} [{pct(f['agreement_lower'])}, "
                                            f"{pct(f['agreement_upper'])}]"],
        ["probability loyalty (1 - sqrt JS, bits)", f"{f['probability_loyalty']:.4f}"],
        ["KL(teacher ‖ student), nats", f"{f['kl']:.4f}"],
        ["JS divergence, nats", f"{f['js']:.4f}"],
        ["top-k overlap", topk],
    ]
    blocks: list[Block] = [("table", ["measure", "value"], match_rows, "lr")]
    blocks.append(("p", "Agreement as a function of the teacher's confidence: disagreements on inputs the teacher "
                        "is sure about matter more than on ambiguous ones."))
    blocks.append(("img", "plots/agreement.png", caption("plots/agreement.png")))
    out.append(("Distribution match", blocks))

    if "accuracy" in report:
        acc = report["accuracy"]
        rows = [[name, pct(a["accuracy"]), f"[{pct(a['accuracy_lower'])}, {pct(a['accuracy_upper'])}]", str(a["n"])]
                for name, a in (("teacher", acc["teacher"]), ("student", acc["student"]))]
        blocks = [("table", ["model", "test accuracy", f"{100 * report['confidence']:g}% interval (exact)", "n"],
                   rows, "lrrr")]
        if report.get("per_class"):
            blocks.append(("table", ["class", "n", "teacher accuracy", "student accuracy", "agreement"],
                           [[_class_label(r["class"], report), str(r["n"]), pct(r["teacher_accuracy"]),
                             pct(r["student_accuracy"]), pct(r["agreement"])] for r in report["per_class"]],
                           "lrrrr"))
        out.append(("Accuracy and per class", blocks))

    if "confusion" in report:
        out.append(("Teacher vs student confusion", _confusion_blocks(report["confusion"]["matrix"], report)))

    if "calibration" in report:
        cal = report["calibration"]
        rows = [[name, f"{cal[name]['ece']:.4f}"] for name in ("teacher", "student", "scratch") if name in cal]
        out.append(("Calibration", [
            ("p", f"Expected calibration error over {cal['n_bins']} equal-width confidence bins (Guo et al. 2017): "
                  "0 means confidence matches accuracy."),
            ("table", ["model", "ECE"], rows, "lr"),
            ("img", "plots/reliability.png", caption("plots/reliability.png")),
        ]))

    ex = report["explanations"]
    if ex.get("available"):
        cam, sal = ex["gradcam_pp"], ex["saliency"]
        blocks = []
        if cam.get("available"):
            blocks.append(("p", f"Grad-CAM++ (Chattopadhay et al. 2018) on teacher layer `{cam['teacher_layer']}` and "
                                f"student layer `{cam['student_layer']}`: mean Spearman rank correlation "
                                f"{_num(cam['rank_correlation'])} ± {_num(cam['rank_correlation_std'])} over "
                                f"{cam['n_valid']} inputs (1: same ranking of pixels)."))
        else:
            layer = f" (teacher layer `{cam['teacher_layer']}`)" if cam.get("teacher_layer") else ""
            blocks.append(("p", f"Grad-CAM++ is not comparable here: {cam['reason']}. The teacher's map is shown"
                                f"{layer} where it exists."))
        blocks.append(("p", f"Gradient saliency (|d score / d input|, class: the teacher's prediction): mean Spearman "
                            f"rank correlation teacher vs student {_num(sal['rank_correlation'])} ± "
                            f"{_num(sal['rank_correlation_std'])} over {sal['n_valid']} inputs."))
        blocks.append(("img", "plots/explanations.png", caption("plots/explanations.png")))
        out.append(("Explanations", blocks))
    else:
        out.append(("Explanations", [("p", f"Not computed: {ex.get('reason', 'not available')}.")]))

    rob = report["robustness"]
    if rob.get("available", True) is False:
        out.append(("Robustness", [("p", f"Not computed: {rob['reason']}.")]))
        rob = None
    if rob is not None:
        out.append(("Robustness", _robustness_blocks(report, rob)))
    return out + _cost_section(report.get("cost"))


def _class_label(class_id: int, report: dict[str, Any]) -> str:
    """A class as the report shows it: its name when the data has names ("setosa (0)"), else its id."""
    names = report.get("data", {}).get("class_names")
    return f"{names[class_id]} ({class_id})" if names and 0 <= class_id < len(names) else str(class_id)


def _confusion_blocks(matrix: list[list[int]], report: dict[str, Any]) -> list[Block]:
    cells = sorted(((matrix[i][j], i, j) for i in range(len(matrix)) for j in range(len(matrix)) if i != j and
                    matrix[i][j]), reverse=True)[:8]
    blocks = [("p", "Where the student departs from the teacher (rows: teacher prediction, columns: student "
                    "prediction). " + ("Most frequent disagreements: " + ", ".join(
                        f"teacher {_class_label(i, report)} → student {_class_label(j, report)} ({c}x)"
                        for c, i, j in cells) + "." if cells else
                        "No disagreements."))]
    blocks.append(("img", "plots/confusion.png", caption("plots/confusion.png")))
    return blocks


def _robustness_blocks(report: dict[str, Any], rob: dict[str, Any]) -> list[Block]:
    how = []  # name only the perturbations these inputs received (no "token dropout" for tabular data)
    if "gaussian_noise" in rob["perturbation"]:
        how.append(f"Gaussian noise ({rob['noise']:g} x each feature's std)")
    if "token_dropout" in rob["perturbation"]:
        how.append(f"token dropout (probability {rob['token_dropout']:g})")
    rows = [[label, pct(rob[key]["rate"]), f"[{pct(rob[key]['lower'])}, {pct(rob[key]['upper'])}]"]
            for label, key in (("student vs teacher, clean inputs", "agreement_clean"),
                               ("student vs teacher, perturbed inputs", "agreement_perturbed"),
                               ("teacher: perturbed vs clean prediction", "teacher_stability"),
                               ("student: perturbed vs clean prediction", "student_stability"))]
    return [
        ("p", f"Inputs perturbed by {' and '.join(how)}; seed {rob['seed']}. {agreement_change(rob)}"),
        ("table", ["agreement", "rate", f"{100 * report['confidence']:g}% interval"], rows, "lrr"),
    ]


def agreement_change(rob: dict[str, Any]) -> str:
    """`agreement_drop` (clean minus perturbed) in words whose sign matches the direction."""
    drop = 100 * rob["agreement_drop"]
    if abs(drop) < 0.005:
        return "Agreement with the teacher is unchanged under perturbation."
    return f"Agreement with the teacher {'falls' if drop > 0 else 'rises'} by {abs(drop):.2f} points under " \
           "perturbation."


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _per_seed_blocks(report: dict[str, Any]) -> list[Block]:
    student, scratch = report["student"], report.get("scratch")
    runs = [("distilled", student)] + ([("scratch", scratch)] if scratch else [])
    extra = all("kl" in m for _, s in runs for m in s["per_seed"])
    header = ["seed", "run", "accuracy", "95% interval", "agreement", "95% lower bound"] + (
        ["KL", "ECE"] if extra else [])
    rows = []
    for name, summary in runs:
        for m in summary["per_seed"]:
            interval = f"[{pct(m['accuracy_lower'])}, {pct(m['accuracy_upper'])}]"
            row = [str(m["seed"]), name, pct(m["accuracy"]), interval, pct(m["agreement"]),
                   pct(m["agreement_lower_95"])]
            if extra:
                row += [f"{m['kl']:.4f}", f"{m['ece']:.4f}"]
            rows.append(row)
    return [("table", header, rows, "rlrlrr" + ("rr" if extra else ""))]


def environment_line(report: dict[str, Any]) -> str:
    env = report["environment"]
    return (f"kdforge {env['kdforge']}, torch {env['torch']}, Python {env['python']}, "
            f"{env['torch_threads']} thread(s), CUDA: {env['cuda']}.")
