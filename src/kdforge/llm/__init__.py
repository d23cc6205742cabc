"""Language-model distillation helpers: vocabulary checks, sequence-level KD, DistillSpec, tiny causal LMs, and
cross-tokenizer alignment (align, cross_data)."""
