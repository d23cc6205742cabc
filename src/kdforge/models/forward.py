"""Calling a model on a dict batch and reading its logits, whatever the model returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from kdforge.errors import KDForgeError


def call_model(model: nn.Module, batch: Mapping[str, Tensor], inputs: list[str] | Mapping[str, str]) -> Any:
    """One input key is passed positionally (`model(x)`), several as keywords (`model(input_ids=..., ...)`); a
    mapping {forward argument: batch key} passes each batch key under its argument's name."""
    if isinstance(inputs, Mapping):
        return model(**{argument: batch[key] for argument, key in inputs.items()})
    if len(inputs) == 1:
        return model(batch[inputs[0]])
    return model(**{key: batch[key] for key in inputs})


def logits_of(output: Any) -> Tensor:
    """A tensor as is; `.logits` of a transformers ModelOutput or a dict; else the first element of a tuple."""
    if isinstance(output, Tensor):
        return output
    if getattr(output, "is_linear_head", False):  # hidden states + output weight: a fused loss makes the logits
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise KDForgeError(
        f"the model returned {type(output).__name__}; kdforge needs a logits tensor, an object with .logits, "
        "or a tuple whose first item is the logits."
    )
