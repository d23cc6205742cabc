"""Heo, Lee, Yun & Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
Neurons", AAAI 2019.

https://arxiv.org/abs/1811.03233 (authors' code: https://github.com/bhheo/AB_distillation)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdforge.layer_maps import expand_pairs
from kdforge.losses.base import Outputs, PairedFeatureLoss, Targets
from kdforge.losses.functional import feature, shape_of
from kdforge.models.adapters import Projector, check_projector_kind
from kdforge.registry import LOSSES
from kdforge.validation import check_positive, check_same_shape


def boundary_loss(student_pre: Tensor, teacher_pre: Tensor, margin: float) -> Tensor:
    """Element-wise alternative (hinge-squared) loss of Eq. (5): the student's pre-activation must fall on the
    teacher's side of zero with a margin. Zero where the student already is beyond the margin on the right side.

    (s + m)² where the teacher neuron is off (t <= 0) and s > -m; (s - m)² where it is on (t > 0) and s < m.
    """
    teacher_on = teacher_pre > 0
    push_down = (student_pre + margin).pow(2) * ((student_pre > -margin) & ~teacher_on)
    push_up = (student_pre - margin).pow(2) * ((student_pre < margin) & teacher_on)
    return push_down + push_up


@LOSSES.register(
    "ab",
    example={"pairs": [("feat", "feat")]},
    paper="Heo et al. 2019, https://arxiv.org/abs/1811.03233",
    summary="activation boundaries: hinge-squared loss putting student pre-activations on the teacher's side of 0",
    nonzero_at_match="the margin penalises matching pre-activations closer to 0 than the margin, and the "
                     "connector is randomly initialised",
)
class ABLoss(PairedFeatureLoss):
    """Activation-boundary transfer: make each student neuron (through a connector) active exactly where the
    teacher's is, with a margin.

    With s = connector(student pre-activation) and t the teacher pre-activation (tap the layer before the
    ReLU, e.g. a BatchNorm), per element:
        l = (s + m)² · 1[s > -m and t <= 0] + (s - m)² · 1[s < m and t > 0]
        loss = mean over pairs of mean over elements of l.
    The connector is a 1x1 convolution followed by batch norm, as in the authors' code (a linear layer plus
    batch norm for (B, D) features). Differences from the authors' code: they derive a margin per channel
    from the teacher's batch-norm statistics, sum over elements, divide by batch size · 1000 and weight
    deeper pairs more; here the margin is one constant and elements are averaged (the recipe weight sets the
    scale). The paper uses this loss to initialise the student before CE training: in a recipe, give the
    `ab` term a `stop_step`.

    Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons",
    AAAI 2019. https://arxiv.org/abs/1811.03233

    Args:
        pairs: (student_tap, teacher_tap) names of pre-activation features, or a layer-map spec
            (see `kdforge.layer_maps`).
        margin: m > 0, in units of the pre-activations (1.0 suits batch-normalised layers; the authors' margins
            are typically 0.5 to 2).
        projector: The connector: 'auto' (conv1x1 for maps, linear for vectors), 'conv1x1', 'linear', or
            'none' (features compared directly; shapes must be equal).

    Shapes: per pair, student (B, C_s, H, W) and teacher (B, C_t, H, W), or (B, D_s) and (B, D_t).

    Example:
        >>> import torch
        >>> loss = ABLoss(pairs=[("s", "t")], margin=1.0)
        >>> s = Outputs(features={"s": torch.randn(4, 8, 3, 3)})
        >>> loss(s, Outputs(features={"t": torch.randn(4, 16, 3, 3)}), Targets()).shape
        torch.Size([])
    """

    def __init__(self, pairs: list[tuple[str, str]] | dict, margin: float = 1.0, projector: str = "auto") -> None:
        super().__init__()
        self.pairs = expand_pairs(pairs, "ABLoss")
        self.margin = check_positive(margin, "margin", "ABLoss")
        self.projector = check_projector_kind(projector, "ABLoss")
        self.connectors = None
        if projector != "none":
            self.connectors = nn.ModuleList([Projector(projector, batchnorm=True) for _ in self.pairs])

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        terms = []
        for i, (s_name, t_name) in self.active_pairs():
            s = feature(student, s_name, "student", "ab")
            t = feature(teacher, t_name, "teacher", "ab")
            where = f"ab pair ({s_name!r}, {t_name!r})"
            if self.connectors is not None:
                if s.dim() != t.dim() or (s.dim() == 4 and s.shape[2:] != t.shape[2:]):
                    check_same_shape(s, t, what=f"{where}: student vs teacher pre-activations",
                                     hint="The connector maps channels only: pair layers of the same kind and "
                                          "spatial size.")
                s_mapped = self.connectors[i](s, like=t)
            else:
                s_mapped = s
            check_same_shape(s_mapped, t, what=f"{where}: student {shape_of(s)} (after the connector) vs teacher",
                             hint="Add `projector: auto`, or pair layers with the same shape.")
            terms.append(boundary_loss(s_mapped, t, self.margin).mean())
        return torch.stack(terms).mean()
