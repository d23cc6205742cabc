"""Registered distillation losses: one method per module, each registering itself on import."""

from kdforge.losses import ce, kd, logit_mse  # noqa: F401  (imported for registration)
from kdforge.losses.base import IGNORE_INDEX, DistillLoss, Outputs, Targets, WeightedSum
from kdforge.registry import LOSSES

__all__ = ["IGNORE_INDEX", "LOSSES", "DistillLoss", "Outputs", "Targets", "WeightedSum"]
