"""Projectors that map a student feature to the teacher's width: FitNets regressors, AB connectors, CRD heads.

A projector belongs to the loss that uses it (it is a submodule of a `DistillLoss`). So it trains with the
student (the optimizer is built over `DistillModule.parameters()`), it is saved in checkpoints with the loss
state, and it is left out of the exported student, because only the student model is saved as the model.

Widths are never written in a recipe: a projector reads them from the first batch it sees. `build.preflight`
runs every loss once on one batch before the optimizer exists, so the parameters are in place when it is
built. A state dict saved from a built projector also builds an unbuilt one (the weight shapes say how), so a
checkpoint loads into a freshly constructed loss.

Kinds:
    linear:  y = x W^T (+ b) on the last dimension, for (B, D) vectors or (B, T, D) token states.
    conv1x1: a 1x1 convolution, for (B, C, H, W) maps; it changes channels, never the spatial size.
    auto:    conv1x1 for 4-D inputs, linear otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdforge.errors import ShapeMismatchError

PROJECTOR_KINDS = ("auto", "linear", "conv1x1")


def check_projector_kind(kind: str, owner: str, allow_none: bool = True) -> str:
    """Validate a loss's `projector` argument ('none' means no projector, where the loss allows it)."""
    allowed = (*PROJECTOR_KINDS, "none") if allow_none else PROJECTOR_KINDS
    if kind not in allowed:
        raise ValueError(f"The 'projector' parameter of {owner} must be one of {', '.join(allowed)}. Got {kind!r}.")
    return kind


class Projector(nn.Module):
    """A learned linear map from student features to a target width, built from the first input it sees.

    Args:
        kind: 'auto', 'linear' or 'conv1x1' (see the module docstring).
        out_features: Fixed output width (CRD's embedding size). None: the width of the `like` tensor given
            at the first call (the teacher feature), which is what FitNets' regressor needs.
        batchnorm: Follow the map by batch normalisation over the output channels (AB's connector).
        bias: Learn a bias (left out when batchnorm follows, which has its own shift).

    Shapes: (B, C, H, W) -> (B, C_out, H, W) for conv1x1; (B, ..., D) -> (B, ..., D_out) for linear.

    Example:
        >>> import torch
        >>> proj = Projector("auto")
        >>> proj(torch.randn(2, 8, 4, 4), like=torch.randn(2, 16, 4, 4)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, kind: str = "auto", out_features: int | None = None, batchnorm: bool = False,
                 bias: bool = True) -> None:
        super().__init__()
        check_projector_kind(kind, "Projector", allow_none=False)
        if out_features is not None and not out_features >= 1:
            raise ValueError(f"The 'out_features' parameter of Projector must be >= 1. Got {out_features!r}.")
        self.kind = kind
        self.out_features = out_features
        self.batchnorm = batchnorm
        self.bias = bias and not batchnorm
        self.layer: nn.Module | None = None
        self.norm: nn.Module | None = None
        # Follows .to(device/dtype) moves, so a projector built later lands where the loss was moved.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    def built(self) -> bool:
        return self.layer is not None

    def _resolve(self, rank: int) -> str:
        if self.kind == "auto":
            return "conv1x1" if rank == 4 else "linear"
        return self.kind

    def build(self, kind: str, in_features: int, out_features: int, device: Any = None) -> None:
        """Create the layers (called by the first forward, or by loading a state dict)."""
        factory = {"device": device if device is not None else self._anchor.device, "dtype": self._anchor.dtype}
        if kind == "conv1x1":
            self.layer = nn.Conv2d(in_features, out_features, kernel_size=1, bias=self.bias, **factory)
            if self.batchnorm:
                self.norm = nn.BatchNorm2d(out_features, **factory)
        else:
            self.layer = nn.Linear(in_features, out_features, bias=self.bias, **factory)
            if self.batchnorm:
                self.norm = nn.BatchNorm1d(out_features, **factory)

    def forward(self, x: Tensor, like: Tensor | None = None) -> Tensor:
        kind = self._resolve(x.dim())
        if kind == "conv1x1" and x.dim() != 4:
            raise ShapeMismatchError(
                f"Projector: a conv1x1 projector needs (B, C, H, W) features; got shape {tuple(x.shape)}. "
                "Use `projector: linear` (or auto) for vectors and token states."
            )
        if not self.built:
            out = self.out_features
            if out is None:
                if like is None:
                    raise ValueError("Projector: the first call needs `like` (the target tensor) or out_features.")
                out = like.shape[1] if kind == "conv1x1" and like.dim() >= 2 else like.shape[-1]
            in_features = x.shape[1] if kind == "conv1x1" else x.shape[-1]
            self.build(kind, in_features, out, device=x.device)
        expected = self.layer.in_channels if isinstance(self.layer, nn.Conv2d) else self.layer.in_features
        got = x.shape[1] if isinstance(self.layer, nn.Conv2d) else x.shape[-1]
        if got != expected:
            raise ShapeMismatchError(
                f"Projector: built for {expected} input features on its first batch, now given {got} "
                f"(shape {tuple(x.shape)}). Tap the same layer on every batch."
            )
        y = self.layer(x)
        if self.norm is not None:
            if isinstance(self.norm, nn.BatchNorm1d) and y.dim() > 2:
                y = self.norm(y.flatten(0, -2)).view_as(y)  # (B*T, D) rows for token states
            else:
                y = self.norm(y)
        return y

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        weight = state_dict.get(prefix + "layer.weight")
        if not self.built and weight is not None:  # a checkpoint of a built projector builds this one
            kind = "conv1x1" if weight.dim() == 4 else "linear"
            self.build(kind, weight.shape[1], weight.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, out_features={self.out_features}, batchnorm={self.batchnorm}"
