"""Metrics as pure functions of predictions: reference first (teacher or true labels), then the student."""

from kdforge.metrics.fidelity import clopper_pearson, clopper_pearson_lower, top1_agreement
from kdforge.metrics.task import accuracy

__all__ = ["accuracy", "clopper_pearson", "clopper_pearson_lower", "top1_agreement"]
