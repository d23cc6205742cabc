"""An ensemble teacher: the weighted average of several teachers' logits (Hinton et al. 2015, section 1;
the "cumbersome model" there is an ensemble)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from kdforge.errors import ShapeMismatchError
from kdforge.models.forward import logits_of


class EnsembleTeacher(nn.Module):
    """Calls every member with the same inputs and returns sum_i w_i · logits_i with sum_i w_i = 1.

    Averaging logits (not probabilities) is the convention of the ensemble-teacher recipes in the KD
    literature; at temperature T the soft targets are then softmax(mean logits / T).

    Args:
        members: Teacher modules with equal output shapes.
        weights: Positive weights, normalised to sum to 1 (default: equal).
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"EnsembleTeacher needs at least two members; got {len(members)}.")
        weights = [1.0] * len(members) if weights is None else list(weights)
        if len(weights) != len(members) or any(not w > 0 for w in weights):
            raise ValueError(f"EnsembleTeacher needs one positive weight per member; got {weights}.")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        outputs = [logits_of(member(*args, **kwargs)) for member in self.members]
        shapes = {tuple(o.shape) for o in outputs}
        if len(shapes) != 1:
            raise ShapeMismatchError(f"ensemble teacher: members return different logit shapes {sorted(shapes)}.")
        stacked = torch.stack(outputs)  # (M, B, K)
        return torch.einsum("m,m...->...", self.weights.to(stacked.dtype), stacked)
