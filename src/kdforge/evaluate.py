"""Run models over a dataset and compare them: accuracy, teacher-student agreement with its bound, and the
full fidelity evaluation behind `kdforge eval` and the report (`evaluate_pair`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kdforge.data.tensors import TensorData, sequential_batches
from kdforge.errors import KDForgeError
from kdforge.metrics import (
    accuracy,
    agreement_by_confidence,
    clopper_pearson,
    clopper_pearson_lower,
    cosine_to_teacher,
    embedding_fidelity,
    embedding_mse,
    expected_calibration_error,
    find_spatial_layer,
    gradcam_plus_plus,
    gradient_saliency,
    js_divergence,
    kl_to_teacher,
    label_loyalty,
    measure_latencies,
    pac_assessment,
    parameter_count,
    per_class_agreement,
    perturb,
    prediction_confusion,
    probability_loyalty,
    rank_correlation,
    reliability_bins,
    robustness_summary,
    top1_agreement,
    top_k_overlap,
    weights_size_bytes,
)
from kdforge.models.forward import call_model, logits_of
from kdforge.types import IGNORE_INDEX
from kdforge.validation import check_same_shape

logger = logging.getLogger("kdforge")


@torch.no_grad()
def predict_logits(model: nn.Module, data: TensorData, inputs: list[str], batch_size: int = 512) -> Tensor:
    """Logits of `model` on every row of `data`, in order, on the CPU. The model is put in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for batch in sequential_batches(data, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs.append(logits_of(call_model(model, batch, inputs)).float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def accuracy_summary(labels: Tensor, logits: Tensor, confidence: float) -> dict[str, float]:
    correct, n = accuracy(labels, logits)
    lower, upper = clopper_pearson(correct, n, confidence)
    return {"accuracy": correct / n, "accuracy_lower": lower, "accuracy_upper": upper, "n": n}


def agreement_summary(teacher_logits: Tensor, student_logits: Tensor, confidence: float) -> dict[str, float]:
    """Top-1 agreement over the rows given: flatten sequence logits with `positions(data)` first, so a token task
    counts the positions its accuracy counts, not padding or unmasked tokens."""
    agree, n = top1_agreement(teacher_logits, student_logits)
    lower, upper = clopper_pearson(agree, n, confidence)
    return {"agreement": agree / n, "agreement_lower": lower, "agreement_upper": upper,
            "agreement_lower_95": clopper_pearson_lower(agree, n, 0.95), "agreement_n": n}


def is_label_free(data: TensorData) -> bool:
    """Data without `labels` (sentences for embedding distillation): runs are judged against the teacher's
    outputs only (`embedding_evaluation`), never by accuracy or argmax agreement."""
    return "labels" not in data.tensors


def validator(data: TensorData, inputs: list[str], teacher_logits: Tensor | None,
              batch_size: int = 512) -> Callable[[nn.Module], dict[str, float]]:
    """A `validate(student)` function for the loop: val accuracy, `val/loss` (mean cross-entropy on the labelled
    rows; the loop breaks accuracy ties with it) and (with a teacher) agreement; on label-free data,
    `val/cosine` (mean cosine to the teacher's outputs, maximised by `monitor`) and `val/mse`."""
    if is_label_free(data) and teacher_logits is None:
        raise KDForgeError(f"{data.name}: the validation data has no 'labels' and there are no teacher outputs to "
                           "compare with; give labelled data, or a teacher, or set data.val_size: 0.")

    flat = positions(data)

    def validate(student: nn.Module) -> dict[str, float]:
        logits = predict_logits(student, data, inputs, batch_size)
        if is_label_free(data):
            return {"val/cosine": float(cosine_to_teacher(teacher_logits, logits).mean()),
                    "val/mse": embedding_mse(teacher_logits, logits)}
        labels = data.tensors["labels"]
        correct, n = accuracy(labels, logits)
        metrics = {"val/accuracy": correct / n}
        if labels.shape == logits.shape[:-1] and n > 0:  # breaks ties between steps that score the same accuracy
            metrics["val/loss"] = float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).double(), labels.reshape(-1), ignore_index=IGNORE_INDEX))
        if teacher_logits is not None:
            agree, total = top1_agreement(flat(teacher_logits), flat(logits))
            metrics["val/agreement"] = agree / total
        return metrics

    return validate


# --------------------------------------------------------------------------------------------------------------
# The fidelity report's sections: everything `kdforge eval` and `report.json` say about a teacher-student pair.
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalOptions:
    """What the full evaluation of a teacher-student pair measures, and how.

    Args:
        confidence: Level of the two-sided exact intervals.
        epsilon: Disagreement rate the PAC statement tries to certify.
        delta: One minus the confidence of the PAC statement.
        n_bins: Confidence bins of the reliability diagrams and ECE.
        top_k: k values of the top-k overlap (those above the number of classes are dropped).
        explain_samples: Rows whose explanation maps are computed (image-like inputs only).
        noise: Gaussian noise, in units of each feature's standard deviation, for the robustness check.
        token_dropout: Token drop probability for integer (token) inputs.
        latency_batch_sizes: Batch sizes at which latency and throughput are measured.
        latency_repeats: Timed forward passes per batch size.
        latency_warmup: Untimed passes first.
        seed: Seed of the perturbation and of the choice of explained rows.
    """

    confidence: float = 0.95
    epsilon: float = 0.01
    delta: float = 0.05
    n_bins: int = 15
    top_k: tuple[int, ...] = (1, 3, 5)
    explain_samples: int = 32
    noise: float = 0.25
    token_dropout: float = 0.1
    latency_batch_sizes: tuple[int, ...] = (1, 32, 256)
    latency_repeats: int = 20
    latency_warmup: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epsilon", "delta", "confidence"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise KDForgeError(f"--{name} must be in (0, 1); got {value!r}. E.g. --epsilon 0.01 --delta 0.05.")
        if self.n_bins < 1 or self.latency_repeats < 1 or any(b < 1 for b in self.latency_batch_sizes):
            raise KDForgeError("n_bins, latency_repeats and every latency batch size must be >= 1.")


MAX_CLASSES_CONFUSION = 50  # the K x K teacher-vs-student matrix is left out above this many classes
MAX_CLASSES_PER_CLASS = 200  # and the per-class table above this many


def positions(data: TensorData) -> Callable[[Tensor], Tensor]:
    """How rows are compared: (N, K) logits as they are; (N, T, V) sequence logits (and (N, T) labels) flattened
    to one row per position, keeping only the positions that count: the data's `mask` (the masked-LM or tagged
    positions, the tokens with a next-token label) when it has one, else its `attention_mask` (real tokens)."""
    masks = [data.tensors.get(key) for key in ("mask", "attention_mask")]

    def flat(tensor: Tensor) -> Tensor:
        if tensor.dim() == 3 or (tensor.dim() == 2 and not tensor.is_floating_point()):
            for mask in masks:
                if mask is not None and mask.shape == tensor.shape[:2]:
                    return tensor[mask.bool()]
            return tensor.flatten(0, 1)
        return tensor

    return flat


@dataclass
class PairEvaluation:
    """The sections of the report for one teacher-student pair, plus what the plots need."""

    sections: dict[str, Any]
    teacher_logits: Tensor
    student_logits: Tensor
    maps: dict[str, Tensor] | None = None


def fidelity_section(teacher_logits: Tensor, student_logits: Tensor, opts: EvalOptions) -> dict[str, Any]:
    """Agreement with its exact interval and PAC assessment, and the distribution-match metrics."""
    agree, n = top1_agreement(teacher_logits, student_logits)
    lower, upper = clopper_pearson(agree, n, opts.confidence)
    lower_95 = clopper_pearson_lower(agree, n, 0.95)
    num_classes = teacher_logits.shape[1]
    pac = pac_assessment(agree, n, opts.epsilon, opts.delta)
    return {
        "n": n,
        "agreement": agree / n,
        "agreement_lower": lower,
        "agreement_upper": upper,
        "agreement_lower_95": lower_95,
        "statement": (f"With 95% confidence the student disagrees with the teacher's top-1 prediction on at most "
                      f"{100 * (1 - lower_95):.2f}% of inputs drawn like these {n} samples "
                      "(one-sided exact Clopper-Pearson bound)."),
        "pac": pac,
        "kl": kl_to_teacher(teacher_logits, student_logits),
        "js": js_divergence(teacher_logits, student_logits),
        "top_k_overlap": {str(k): top_k_overlap(teacher_logits, student_logits, k)
                          for k in opts.top_k if k <= num_classes},
        "label_loyalty": label_loyalty(teacher_logits, student_logits),
        "probability_loyalty": probability_loyalty(teacher_logits, student_logits),
    }


def calibration_section(labels: Tensor, logits: dict[str, Tensor], n_bins: int) -> dict[str, Any]:
    """ECE and reliability bins of each named model (teacher, student, scratch)."""
    out: dict[str, Any] = {"n_bins": n_bins}
    for name, value in logits.items():
        bins = reliability_bins(labels, value, n_bins)
        out[name] = {"ece": expected_calibration_error(labels, value, n_bins), "bins": bins}
    return out


def _forward(model: nn.Module, key: str) -> Callable[[Tensor], Tensor]:
    return lambda x: logits_of(call_model(model, {key: x}, [key]))


def explanation_section(teacher: nn.Module, student: nn.Module, data: TensorData, teacher_inputs: list[str],
                        student_inputs: list[str], teacher_logits: Tensor,
                        opts: EvalOptions) -> tuple[dict[str, Any], dict[str, Tensor] | None]:
    """Grad-CAM++ (when both models have a spatial layer) and gradient-saliency maps of both models for the
    teacher's predicted class, and their per-row Spearman rank correlation."""
    if len(teacher_inputs) != 1 or teacher_inputs != student_inputs:
        return {"available": False, "reason": "explanations need one shared input tensor"}, None
    key = teacher_inputs[0]
    x_all = data.tensors[key]
    if not x_all.is_floating_point() or x_all.dim() != 4:
        return {"available": False,
                "reason": f"inputs {key!r} are not image-like (N, C, H, W) floats; got {tuple(x_all.shape)}"}, None
    generator = torch.Generator().manual_seed(opts.seed)
    rows = torch.randperm(len(x_all), generator=generator)[: opts.explain_samples].sort().values
    x, target = x_all[rows], teacher_logits[rows].argmax(dim=-1)
    fwd_t, fwd_s = _forward(teacher, key), _forward(student, key)
    out: dict[str, Any] = {"available": True, "n": len(rows), "rows": rows.tolist(), "target": "teacher prediction"}
    maps: dict[str, Tensor] = {"input": x}
    with _eval_mode(teacher), _eval_mode(student):
        sal_t, sal_s = gradient_saliency(fwd_t, x, target), gradient_saliency(fwd_s, x, target)
        out["saliency"] = _correlation_summary(rank_correlation(sal_t, sal_s))
        maps.update(saliency_teacher=sal_t, saliency_student=sal_s)
        layer_t, layer_s = find_spatial_layer(teacher, fwd_t, x), find_spatial_layer(student, fwd_s, x)
        cam: dict[str, Any] = {"teacher_layer": layer_t, "student_layer": layer_s}
        if layer_t is not None:
            maps["gradcam_teacher"] = gradcam_plus_plus(teacher, fwd_t, x, layer_t, target)
        if layer_s is not None:
            maps["gradcam_student"] = gradcam_plus_plus(student, fwd_s, x, layer_s, target)
        if layer_t is not None and layer_s is not None:
            cam.update(available=True, **_correlation_summary(rank_correlation(maps["gradcam_teacher"],
                                                                              maps["gradcam_student"])))
        else:
            missing = " and ".join(n for n, layer in (("teacher", layer_t), ("student", layer_s)) if layer is None)
            cam.update(available=False, reason=f"the {missing} has no convolutional (B, C, H, W) layer; "
                                               "compare the gradient-saliency maps instead")
        out["gradcam_pp"] = cam
    return out, maps


def _correlation_summary(rho: Tensor) -> dict[str, Any]:
    valid = rho[~torch.isnan(rho)]
    if len(valid) == 0:
        return {"rank_correlation": None, "rank_correlation_std": None, "n_valid": 0}
    return {"rank_correlation": float(valid.mean()),
            "rank_correlation_std": float(valid.std()) if len(valid) > 1 else 0.0, "n_valid": len(valid)}


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put a model in eval mode for a block and restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def robustness_section(teacher: nn.Module, student: nn.Module, data: TensorData, teacher_inputs: list[str],
                       student_inputs: list[str], teacher_logits: Tensor, student_logits: Tensor,
                       opts: EvalOptions, batch_size: int = 512,
                       flat: Callable[[Tensor], Tensor] | None = None) -> dict[str, Any]:
    """Agreement and each model's stability when the inputs are slightly perturbed (noise or token dropout).

    `flat` maps (N, T, V) sequence logits to the (rows, V) positions compared (see `positions`).
    """
    flat = flat or positions(data)
    keys = sorted(set(teacher_inputs) | set(student_inputs))
    noisy = TensorData(perturb(data.tensors, keys, noise=opts.noise, token_dropout=opts.token_dropout,
                               seed=opts.seed), name=f"{data.name} (perturbed)")
    t_noisy = predict_logits(teacher, noisy, teacher_inputs, batch_size)
    s_noisy = predict_logits(student, noisy, student_inputs, batch_size)
    kinds = sorted({"gaussian_noise" if data.tensors[k].is_floating_point() else "token_dropout" for k in keys})
    return {"perturbation": kinds, "noise": opts.noise, "token_dropout": opts.token_dropout, "seed": opts.seed,
            **robustness_summary(flat(teacher_logits), flat(t_noisy), flat(student_logits), flat(s_noisy),
                                 opts.confidence)}


def cost_section(models: dict[str, tuple[nn.Module, list[str]]], data: TensorData,
                 opts: EvalOptions) -> dict[str, Any]:
    """Parameters, safetensors size and latency/throughput of each model, and the student's speed-up.

    The models are timed interleaved on the same rows at each batch size, so background load affects them alike.
    """
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "device": "cpu",
                           "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    for name, (model, _) in models.items():
        out["device"] = str(next(model.parameters()).device)
        out[name] = {"params": parameter_count(model), "size_bytes": weights_size_bytes(model), "latency": []}
    with ExitStack() as stack:
        for model, _ in models.values():
            stack.enter_context(_eval_mode(model))
        for bs in opts.latency_batch_sizes:
            calls = {}
            for name, (model, inputs) in models.items():
                device = next(model.parameters()).device
                batch = {k: v.to(device) for k, v in data[torch.arange(bs) % len(data)].items()}
                calls[name] = _timed_call(model, batch, inputs, device)
            for name, stats in measure_latencies(calls, bs, opts.latency_repeats, opts.latency_warmup).items():
                out[name]["latency"].append(stats)
    if "teacher" in out and "student" in out:
        t, s = out["teacher"], out["student"]
        out["params_ratio"] = t["params"] / max(s["params"], 1)
        out["size_ratio"] = t["size_bytes"] / max(s["size_bytes"], 1)
        out["speedup"] = {str(a["batch_size"]): a["p50_ms"] / b["p50_ms"] if b["p50_ms"] > 0 else None
                          for a, b in zip(t["latency"], s["latency"], strict=True)}
    return out


def _timed_call(model: nn.Module, batch: dict[str, Tensor], inputs: list[str],
                device: torch.device) -> Callable[[], Any]:
    """One forward pass; on a GPU it waits for the kernels to finish, so the clock measures the work."""
    if device.type == "cuda":
        return lambda: (call_model(model, batch, inputs), torch.cuda.synchronize(device))
    return lambda: call_model(model, batch, inputs)


def evaluate_pair(teacher: nn.Module, student: nn.Module, data: TensorData, teacher_inputs: list[str],
                  student_inputs: list[str], opts: EvalOptions | None = None, *, num_classes: int | None = None,
                  teacher_logits: Tensor | None = None, student_logits: Tensor | None = None,
                  batch_size: int = 512, measure_cost: bool = True) -> PairEvaluation:
    """Every section of the fidelity report for a teacher and a student on one labelled evaluation set.

    Args:
        teacher: The reference model.
        student: The model that should imitate it.
        data: Evaluation rows with the models' inputs and `labels` (rows labelled -100 count for fidelity
            but not for accuracy).
        teacher_inputs: Batch keys the teacher reads.
        student_inputs: Batch keys the student reads.
        opts: What to measure (defaults: `EvalOptions()`).
        num_classes: Number of classes (default: the logits' width).
        teacher_logits: Precomputed teacher logits on `data` (else computed).
        student_logits: Precomputed student logits on `data` (else computed).
        batch_size: Evaluation batch size.
        measure_cost: Time both models (skip for a quick evaluation).

    Returns:
        A `PairEvaluation` whose `sections` holds `fidelity`, `accuracy`, `per_class`, `confusion`,
        `agreement_by_confidence`, `calibration`, `explanations`, `robustness` and (when measured) `cost`.
    """
    opts = opts or EvalOptions()
    if "labels" not in data.tensors:
        raise KDForgeError(f"{data.name}: the evaluation data has no 'labels'; give labelled data to evaluate, "
                           "or use embedding_evaluation for label-free (sentence-embedding) data.")
    if teacher_logits is None:
        teacher_logits = predict_logits(teacher, data, teacher_inputs, batch_size)
    if student_logits is None:
        student_logits = predict_logits(student, data, student_inputs, batch_size)
    check_same_shape(teacher_logits, student_logits, what="evaluate: teacher and student logits",
                     hint="The student must predict the same classes as the teacher.")
    flat = positions(data)
    t_flat, s_flat, labels = flat(teacher_logits), flat(student_logits), flat(data.tensors["labels"])
    if labels.shape != t_flat.shape[:1]:  # labels that do not line up with positions: fidelity only
        labels = torch.full(t_flat.shape[:1], IGNORE_INDEX)
    num_classes = num_classes or t_flat.shape[1]
    sections: dict[str, Any] = {"fidelity": fidelity_section(t_flat, s_flat, opts)}
    if bool((labels != IGNORE_INDEX).any()):
        sections["accuracy"] = {"teacher": accuracy_summary(labels, t_flat, opts.confidence),
                                "student": accuracy_summary(labels, s_flat, opts.confidence)}
        if num_classes <= MAX_CLASSES_PER_CLASS:
            sections["per_class"] = per_class_agreement(labels, t_flat, s_flat, num_classes)
        sections["calibration"] = calibration_section(labels, {"teacher": t_flat, "student": s_flat}, opts.n_bins)
    if num_classes <= MAX_CLASSES_CONFUSION:
        sections["confusion"] = {"rows": "teacher prediction", "columns": "student prediction",
                                 "matrix": prediction_confusion(t_flat, s_flat)}
    sections["agreement_by_confidence"] = agreement_by_confidence(t_flat, s_flat, 10)
    # Sections that run the models again (gradients, perturbed inputs, timing) are best-effort: a teacher
    # that only replays stored outputs, or a model without input gradients, gets a section that says why.
    explained = _best_effort("explanations", lambda: explanation_section(
        teacher, student, data, teacher_inputs, student_inputs, teacher_logits, opts))
    sections["explanations"], maps = explained if isinstance(explained, tuple) else (explained, None)
    sections["robustness"] = _best_effort("robustness", lambda: robustness_section(
        teacher, student, data, teacher_inputs, student_inputs, teacher_logits, student_logits, opts, batch_size,
        flat))
    if measure_cost:
        sections["cost"] = _best_effort("cost", lambda: cost_section(
            {"teacher": (teacher, teacher_inputs), "student": (student, student_inputs)}, data, opts))
    return PairEvaluation(sections, teacher_logits, student_logits, maps)


def embedding_evaluation(teacher: nn.Module, student: nn.Module, data: TensorData, teacher_inputs: list[str],
                         student_inputs: list[str], opts: EvalOptions | None = None, *,
                         teacher_emb: Tensor | None = None, student_emb: Tensor | None = None,
                         batch_size: int = 512, measure_cost: bool = True) -> dict[str, Any]:
    """The sections that judge a sentence encoder against its teacher on label-free data: `embedding` (cosine to
    the teacher, MSE, Spearman of pairwise similarities; see `kdforge.metrics.embedding`) and, when measured,
    `cost` (parameters, size, latency and throughput of both, interleaved as for classifiers)."""
    opts = opts or EvalOptions()
    if teacher_emb is None:
        teacher_emb = predict_logits(teacher, data, teacher_inputs, batch_size)
    if student_emb is None:
        student_emb = predict_logits(student, data, student_inputs, batch_size)
    sections: dict[str, Any] = {"embedding": embedding_fidelity(teacher_emb, student_emb)}
    if measure_cost:
        sections["cost"] = _best_effort("cost", lambda: cost_section(
            {"teacher": (teacher, teacher_inputs), "student": (student, student_inputs)}, data, opts))
    return sections


def _best_effort(name: str, compute: Callable[[], Any]) -> Any:
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001 - the report must not fail on an optional section
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        logger.warning("report section %r skipped (%s)", name, reason)
        return {"available": False, "reason": reason}
