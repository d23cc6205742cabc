"""Reimers & Gurevych, "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation",
EMNLP 2020.

https://arxiv.org/abs/2004.09813
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from kdforge.losses.base import DistillLoss, Outputs, Targets
from kdforge.losses.functional import feature, shape_of
from kdforge.models.adapters import Projector
from kdforge.registry import LOSSES
from kdforge.validation import check_same_shape


def _as_embedding(x: Tensor | None, side: str) -> Tensor:
    if x is None:
        raise ValueError(f"embed_mse: the {side} produced no embedding (its forward returned no logits tensor).")
    return x.flatten(1)  # (B, D); a (B, C, H, W) feature is read as one flat vector per sample


@LOSSES.register(
    "embed_mse",
    example={},
    paper="Reimers & Gurevych 2020, https://arxiv.org/abs/2004.09813",
    summary="sentence-embedding distillation: MSE of the student's embedding (optionally projected) onto the "
            "teacher's; multilingual variant via a translation tap",
)
class EmbedMSELoss(DistillLoss):
    """Sentence-embedding distillation: the student's embedding regresses onto the teacher's with MSE.

    loss = mean((P(e_s) - e_t)²) over batch and dimensions, where e = the model's output embedding (its
    "logits": `SentenceEncoder` returns the pooled sentence embedding) and P is the identity, or a learned
    linear projection when `projector='linear'` (student narrower than the teacher).

    Multilingual variant (the paper's Eq. 1): with `translation` naming a student tap that holds the student's
    embedding of the translated sentence t_j (`SentenceEncoder.pair_embedding`), the loss adds
    mean((P(e_s(t_j)) - e_t(s_j))²): the teacher only ever sees the source sentence s_j, the student sees both.
    The paper sums the two MSE terms; so does this loss.

    Reimers & Gurevych, "Making Monolingual Sentence Embeddings Multilingual using Knowledge Distillation",
    EMNLP 2020. https://arxiv.org/abs/2004.09813

    Args:
        projector: 'none' (equal widths) or 'linear' (a learned map from the student's width to the teacher's).
        translation: Student tap holding the embedding of the translated sentence, or None (monolingual).

    Example:
        >>> import torch
        >>> loss = EmbedMSELoss()
        >>> loss(Outputs(logits=torch.randn(4, 8)), Outputs(logits=torch.randn(4, 8)), Targets()).shape
        torch.Size([])
    """

    def __init__(self, projector: str = "none", translation: str | None = None) -> None:
        super().__init__()
        if projector not in ("none", "linear"):
            raise ValueError(
                f"The 'projector' parameter of EmbedMSELoss must be 'none' or 'linear'. Got {projector!r}.")
        if translation is not None and (not isinstance(translation, str) or not translation):
            raise ValueError(f"The 'translation' parameter of EmbedMSELoss must be a tap name. Got {translation!r}.")
        self.projector = projector
        self.translation = translation
        self.proj = Projector("linear") if projector == "linear" else None

    def required_taps(self) -> tuple[set[str], set[str]]:
        return ({self.translation} if self.translation else set()), set()

    def _one(self, e_s: Tensor, e_t: Tensor, what: str) -> Tensor:
        if self.proj is not None:
            e_s = self.proj(e_s, like=e_t)
        check_same_shape(e_s, e_t, what=f"embed_mse: {what} {shape_of(e_s)} vs teacher {shape_of(e_t)} embeddings",
                         hint="Add `projector: linear` when the student's embedding is narrower than the teacher's.")
        return F.mse_loss(e_s, e_t)

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        e_t = _as_embedding(teacher.logits, "teacher")
        loss = self._one(_as_embedding(student.logits, "student"), e_t, "student")
        if self.translation is not None:
            e_tr = _as_embedding(feature(student, self.translation, "student", "embed_mse"), "student translation")
            loss = loss + self._one(e_tr, e_t, "student (translation)")
        return loss
