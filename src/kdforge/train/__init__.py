"""The training loop and what it needs: the distillation module, the teacher side, checkpoints."""
