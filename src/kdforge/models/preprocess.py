"""The preprocessing a run applied to its inputs, as a module in front of the model, so a shipped model takes raw
inputs: `{"standardize": {"input": "x", "mean": [...], "std": [...]}}` (tabular features standardised with the
training split's statistics). The record travels in an export's `model.json` and `export.json`; inside an ONNX
graph it is the first two operations (subtract, divide). A `tokenizer` entry names the tokenizer file shipped
beside a text model: token ids are made outside the model, so it is not a module here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdforge.errors import KDForgeError


class Standardized(nn.Module):
    """`model((x - mean) / std)`: the input `key` standardised as the run standardised it, then the model."""

    def __init__(self, model: nn.Module, key: str, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.model, self.key = model, key
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, *args: Tensor, **kwargs: Tensor) -> Any:
        if args:
            return self.model((args[0] - self.mean) / self.std, *args[1:], **kwargs)
        kwargs[self.key] = (kwargs[self.key] - self.mean) / self.std
        return self.model(**kwargs)


def with_preprocess(model: nn.Module, preprocess: dict[str, Any], where: str) -> nn.Module:
    """`model` behind the modules `preprocess` records (a model without a standardised input is returned as is)."""
    spec = preprocess.get("standardize")
    if not spec:
        return model
    try:
        mean = torch.tensor(spec["mean"], dtype=torch.float64)
        std = torch.tensor(spec["std"], dtype=torch.float64)
        key = str(spec["input"])
    except (KeyError, TypeError, ValueError):
        raise KDForgeError(f"{where}: model.json's preprocess.standardize needs input, mean and std (lists of "
                           "numbers); restore the file.") from None
    if mean.shape != std.shape or not bool((std > 0).all()):
        raise KDForgeError(f"{where}: model.json's preprocess.standardize has mean and std of different lengths "
                           "or a std <= 0; restore the file.")
    return Standardized(model, key, mean, std)


def raw_inputs(batch: dict[str, Tensor], preprocess: dict[str, Any]) -> dict[str, Tensor]:
    """The raw inputs a preprocessed batch came from (x * std + mean), for checking a shipped model."""
    spec = preprocess.get("standardize")
    if not spec or spec["input"] not in batch:
        return dict(batch)
    mean = torch.tensor(spec["mean"], dtype=torch.float64)
    std = torch.tensor(spec["std"], dtype=torch.float64)
    key = spec["input"]
    x = batch[key]
    return {**batch, key: (x.double() * std + mean).to(x.dtype)}


__all__ = ["Standardized", "raw_inputs", "with_preprocess"]
