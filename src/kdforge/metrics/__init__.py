"""Metrics as pure functions of predictions: reference first (teacher or true labels), then the student."""

from kdforge.metrics.calibration import (
    agreement_by_confidence,
    binned_hits,
    expected_calibration_error,
    reliability_bins,
)
from kdforge.metrics.cost import (
    latency_stats,
    measure_latencies,
    measure_latency,
    parameter_count,
    weights_size_bytes,
)
from kdforge.metrics.embedding import (
    cosine_to_teacher,
    embedding_fidelity,
    embedding_mse,
    pairwise_cosines,
    similarity_spearman,
)
from kdforge.metrics.explain import find_spatial_layer, gradcam_plus_plus, gradient_saliency, rank_correlation
from kdforge.metrics.fidelity import (
    clopper_pearson,
    clopper_pearson_lower,
    js_divergence,
    kl_to_teacher,
    label_loyalty,
    per_class_agreement,
    prediction_confusion,
    probability_loyalty,
    top1_agreement,
    top_k_overlap,
)
from kdforge.metrics.paired import mcnemar_exact, mcnemar_rows_needed, paired_test
from kdforge.metrics.robustness import perturb, robustness_summary
from kdforge.metrics.sample_size import (
    disagreement_upper_bound,
    exact_sample_size,
    hoeffding_sample_size,
    pac_assessment,
)
from kdforge.metrics.task import accuracy

__all__ = [
    "accuracy", "agreement_by_confidence", "binned_hits", "clopper_pearson", "clopper_pearson_lower",
    "cosine_to_teacher", "disagreement_upper_bound", "embedding_fidelity", "embedding_mse", "exact_sample_size",
    "expected_calibration_error", "find_spatial_layer", "gradcam_plus_plus", "gradient_saliency",
    "hoeffding_sample_size", "js_divergence", "kl_to_teacher", "label_loyalty", "latency_stats", "mcnemar_exact",
    "mcnemar_rows_needed", "measure_latencies", "measure_latency", "pac_assessment", "paired_test",
    "pairwise_cosines", "parameter_count", "per_class_agreement", "perturb", "prediction_confusion",
    "probability_loyalty", "rank_correlation", "reliability_bins", "robustness_summary", "similarity_spearman",
    "top1_agreement", "top_k_overlap", "weights_size_bytes",
]
