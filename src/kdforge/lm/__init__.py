"""Language-model primitives below the losses and the data: the one row layout (rows), character-offset token
alignment (align), rows paired across tokenizers (cross_data), tokenizer loading and comparison (tokenizers),
and DistillSpec's acceptance measures (distillspec). Checks and clients that use the losses (vocabulary and
position checks, the served teacher) are `kdforge.llm`'s."""
