"""Language-model checks and clients above the losses and the data: vocabulary checks (vocab), the position
check (positions), the served teacher (served), sequence-level KD (seq_kd) and tiny causal LMs (data). The
primitives the losses and the data build on (row layout, alignment, paired rows, tokenizer loading,
DistillSpec's acceptance) live below them, in `kdforge.lm`."""
