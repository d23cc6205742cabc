"""Distil a network into an explicit decision tree (PAC-distillation) and the baselines it must beat."""
