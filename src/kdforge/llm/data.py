"""Tiny causal language models for tests and examples, and the causal-LM data names they pair with.

The data itself (`stdlib_lm`, the BPE tokenizer, `encode`, `lm_rows`) lives in `kdforge.data.lm`, like every
other data source; it is re-exported here so `from kdforge.llm.data import encode, tiny_causal_lm` keeps working.
"""

from __future__ import annotations

import torch

from kdforge.data.lm import BOS, EOS, PAD, SPECIAL_TOKENS, encode, lm_rows, split_rows, stdlib_lm, train_tokenizer


def tiny_causal_lm(arch: str = "gpt2", layers: int = 2, hidden: int = 64, heads: int = 4, vocab_size: int = 512,
                   max_positions: int = 128, seed: int = 0):
    """A random-weight `transformers` causal LM (GPT-2 or Llama) from a config: no download. Its special ids are
    `kdforge.data.lm`'s PAD, BOS and EOS, so it reads `text:stdlib_lm` rows as they are."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    special = {"bos_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD}
    if arch == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, vocab_size=vocab_size,
                            n_positions=max_positions, **special)
        return GPT2LMHeadModel(config)
    if arch == "llama":
        config = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                             num_key_value_heads=heads, intermediate_size=4 * hidden, vocab_size=vocab_size,
                             max_position_embeddings=max_positions, **special)
        return LlamaForCausalLM(config)
    raise ValueError(f"tiny_causal_lm: arch must be 'gpt2' or 'llama'; got {arch!r}.")


__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "encode", "lm_rows", "split_rows", "stdlib_lm", "tiny_causal_lm",
           "train_tokenizer"]
