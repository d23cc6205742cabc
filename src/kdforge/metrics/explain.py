"""Explanation maps and how similar the teacher's and the student's are.

- Grad-CAM++ (Chattopadhay et al. 2018, https://arxiv.org/abs/1710.11063) for models with a spatial
  (B, C, H, W) layer: with A the layer's activation and g = d score / dA,
  alpha_ij^k = g^2 / (2 g^2 + sum_ab A_ab^k g^3), w_k = sum_ij alpha_ij^k relu(g_ij^k),
  map = relu(sum_k w_k A^k), upsampled (bilinear) to the input's size.
- Gradient saliency (Simonyan et al. 2014, https://arxiv.org/abs/1312.6034): max over channels of
  |d score / d input|. It needs no spatial layer, so it compares any two models on image-like inputs.

Both explain the score of one class per row (by default the teacher's predicted class, for both models), and
`rank_correlation` compares two maps per row by Spearman's rho: "does the student look where the teacher looks?".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import ShapeMismatchError
from kdforge.validation import unknown_name

Forward = Callable[[Tensor], Tensor]  # input batch -> logits (B, K)


def find_spatial_layer(model: nn.Module, forward: Forward, x: Tensor) -> str | None:
    """The module path of the last layer (in call order) whose output is a (B, C, H, W) map with H*W > 1.

    Among modules returning the same tensor (a block and its last child), the shortest path is chosen;
    `nn.Identity` modules are skipped. None when the model has no such layer (an MLP).
    """
    records: list[tuple[str, nn.Module, Tensor]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod: nn.Module, args: object, output: object, name: str = name) -> None:
            if isinstance(output, Tensor):
                records.append((name, mod, output))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            forward(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    spatial = [r for r in records if r[2].dim() == 4 and r[2].shape[2] * r[2].shape[3] > 1]
    if not spatial:
        return None
    target = spatial[-1][2]
    names = [name for name, mod, out in records if out is target and not isinstance(mod, nn.Identity)]
    if not names:
        names = [spatial[-1][0]]
    return min(names, key=lambda n: (n.count("."), len(n)))


def _module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules:
        raise unknown_name("layer", layer, [n for n in modules if n], where="gradcam_plus_plus",
                           hint="List module paths with: kdforge inspect MODEL")
    return modules[layer]


def _targets(logits: Tensor, target: Tensor | None) -> Tensor:
    if target is None:
        return logits.argmax(dim=-1)
    if target.shape != logits.shape[:1]:
        raise ShapeMismatchError(f"explanations: target has shape {tuple(target.shape)}; expected "
                                 f"({logits.shape[0]},), one class per row.")
    return target


def gradcam_plus_plus(model: nn.Module, forward: Forward, x: Tensor, layer: str,
                      target: Tensor | None = None) -> Tensor:
    """Grad-CAM++ maps for each row of `x`, shape (N, H, W) of the input, non-negative.

    Args:
        model: The model (put in eval mode by the caller; batch-norm in training mode mixes rows).
        forward: Maps an input batch to logits (B, K); usually `lambda x: model(x)`.
        x: Image-like inputs (N, C, H, W).
        layer: Module path of the spatial layer to explain (see `find_spatial_layer`).
        target: Class to explain per row (N,); default: the model's own prediction.
    """
    if x.dim() != 4:
        raise ShapeMismatchError(f"gradcam_plus_plus: inputs must be images (N, C, H, W); got {tuple(x.shape)}.")
    module = _module(model, layer)
    x = x.detach().clone().requires_grad_(True)  # builds the graph even when the model's weights are frozen
    captured: list[Tensor] = []
    handle = module.register_forward_hook(lambda mod, args, output: captured.append(output))
    try:
        with torch.enable_grad():
            logits = forward(x)
            if not captured or captured[-1].dim() != 4:
                raise ShapeMismatchError(f"gradcam_plus_plus: layer {layer!r} does not output a (B, C, H, W) map. "
                                         "Choose a convolutional layer.")
            activation = captured[-1]  # (N, C, h, w)
            cls = _targets(logits, target)
            score = logits.gather(1, cls.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    activation, grad = activation.detach().double(), grad.double()
    g2, g3 = grad**2, grad**3
    total = activation.sum(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    denominator = 2 * g2 + total * g3
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    weights = (alpha * grad.clamp_min(0)).sum(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    cam = (weights * activation).sum(dim=1, keepdim=True).clamp_min(0)  # (N, 1, h, w)
    if cam.shape[2:] != x.shape[2:]:
        cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam[:, 0].float()


def gradient_saliency(forward: Forward, x: Tensor, target: Tensor | None = None) -> Tensor:
    """Vanilla gradient saliency: max over channels of |d score / d x|, shape (N, H, W) for x (N, C, H, W)."""
    if x.dim() != 4:
        raise ShapeMismatchError(f"gradient_saliency: inputs must be images (N, C, H, W); got {tuple(x.shape)}.")
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(x)
        cls = _targets(logits, target)
        (grad,) = torch.autograd.grad(logits.gather(1, cls.view(-1, 1)).sum(), x)
    return grad.abs().amax(dim=1)


def rank_correlation(teacher_maps: Tensor, student_maps: Tensor) -> Tensor:
    """Spearman's rho between the teacher's and the student's map of each row (ties get average ranks).

    Shapes (N, ...) each; returns (N,) float64, NaN for a row where either map is constant (rho undefined).
    """
    if teacher_maps.shape != student_maps.shape:
        raise ShapeMismatchError(f"rank_correlation: teacher maps {tuple(teacher_maps.shape)} and student maps "
                                 f"{tuple(student_maps.shape)} differ; compute both at the input's resolution.")
    from scipy.stats import rankdata  # on use: importing scipy.stats takes about half a second
    a = rankdata(teacher_maps.flatten(1).double().numpy(), axis=1)
    b = rankdata(student_maps.flatten(1).double().numpy(), axis=1)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(norm > 0, (a * b).sum(axis=1) / np.where(norm > 0, norm, 1.0), np.nan)
    return torch.from_numpy(rho)
