"""Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets", ICLR 2015.

https://arxiv.org/abs/1412.6550
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import feature, shape_of
from kdforge.models.adapters import Projector, check_projector_kind
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


def _hint(student: Tensor, teacher: Tensor, projected: bool) -> str:
    """The fix for a pair whose shapes cannot be compared."""
    if student.dim() != teacher.dim():
        return "Pair taps of the same kind: both (B, C, H, W) maps or both (B, D) vectors."
    if student.dim() == 4 and student.shape[2:] != teacher.shape[2:]:
        return ("A 1x1 projector changes channels, not the spatial size: choose layers with the same H x W "
                "(e.g. a student block before or after its pooling layer).")
    if not projected:
        kind = "conv1x1" if student.dim() == 4 else "linear"
        return f"Add `projector: {kind}` (or auto) to this loss term, or choose layers with the same width."
    return "Choose layers whose shapes differ only in the channel (or last) dimension."


@LOSSES.register(
    "fitnet",
    example={"pairs": [("feat", "feat")]},
    paper="Romero et al. 2014, https://arxiv.org/abs/1412.6550",
    summary="hints: MSE between a learned regressor of a student feature and a teacher feature",
    nonzero_at_match="the regressor is a randomly initialised layer, not the identity, so r(F) != F at start",
)
class FitNetLoss(PairedFeatureLoss):
    """FitNets hints: regress a student layer onto a teacher layer through a learned projector.

    loss = mean over pairs of mean((r(F_s) - F_t)^2), with r a 1x1 convolution for (B, C, H, W) maps or a
    linear layer for (B, D) vectors and (B, T, D) token states, built from the shapes of the first batch and
    trained with the student. The paper writes 1/2·||F_t - r(F_s)||² summed; the mean (as in the common
    reimplementations, e.g. RepDistiller's HintLoss) only rescales it, so the recipe weight absorbs it.

    The paper trains in two stages, hints first, then KD on the whole student: in a recipe that is a
    `fitnet` term with `stop_step: N` and a `kd` term with `start_step: N`. The paper's regressor is a
    convolution whose kernel also shrinks the spatial size; here a projector maps channels only.

    Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015. https://arxiv.org/abs/1412.6550

    Args:
        pairs: (student_tap, teacher_tap) names declared under `taps:`, or a layer-map spec
            ({map: uniform, student: [...], teacher: [...]}, see `kdforge.layer_maps`).
        projector: 'auto' (conv1x1 for 4-D maps, linear otherwise), 'conv1x1', 'linear', or 'none' to compare
            the features directly (they must then have the same shape).

    Shapes: per pair, student (B, C_s, H, W) and teacher (B, C_t, H, W), or (B, D_s) and (B, D_t); with
    projector 'none' both must be equal. A mismatch raises ShapeMismatchError naming the taps (preflight
    runs the loss on one batch, so it is reported before training).

    Example:
        >>> import torch
        >>> loss = FitNetLoss(pairs=[("s", "t")])
        >>> s = Outputs(features={"s": torch.randn(2, 8, 4, 4)})
        >>> loss(s, Outputs(features={"t": torch.randn(2, 16, 4, 4)}), Targets()).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict, projector: str = "auto") -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "FitNetLoss")
        self.projector = check_projector_kind(projector, "FitNetLoss")
        kind = None if projector == "none" else projector
        self.projectors = nn.ModuleList([Projector(kind) for _ in self.pairs]) if kind else None

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        terms = []
        for i, (s_name, t_name) in self.active_pairs():
            s = feature(student, s_name, "student", "fitnet")
            t = feature(teacher, t_name, "teacher", "fitnet")
            where = f"fitnet pair ({s_name!r}, {t_name!r})"
            if self.projectors is None:
                check_same_shape(s, t, what=f"{where}: student feature vs teacher feature",
                                 hint=_hint(s, t, projected=False))
                terms.append((s - t).pow(2).mean())
                continue
            if s.dim() != t.dim() or (s.dim() == 4 and s.shape[2:] != t.shape[2:]):
                check_same_shape(s, t, what=f"{where}: student feature vs teacher feature",
                                 hint=_hint(s, t, projected=True))
            projected = self.projectors[i](s, like=t)
            check_same_shape(projected, t, what=f"{where}: student feature {shape_of(s)} after the projector vs "
                             "teacher feature", hint=_hint(s, t, projected=True))
            terms.append((projected - t).pow(2).mean())
        return torch.stack(terms).mean()
