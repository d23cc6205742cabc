"""Language-model distillation helpers: vocabulary checks, a token-sequence data source, metrics."""
