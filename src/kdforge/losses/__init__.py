"""Registered distillation losses: one method per module, each registering itself on import."""

import kdforge.losses.ab  # noqa: F401  (registers 'ab')
import kdforge.losses.at  # noqa: F401  (registers 'at')
import kdforge.losses.crd  # noqa: F401  (registers 'crd')
import kdforge.losses.dkd  # noqa: F401  (registers 'dkd')
import kdforge.losses.embed_mse  # noqa: F401  (registers 'embed_mse')
import kdforge.losses.fitnet  # noqa: F401  (registers 'fitnet')
import kdforge.losses.fused_linear  # noqa: F401  (registers 'fused_token_kd')
import kdforge.losses.gkd  # noqa: F401  (registers 'gkd')
import kdforge.losses.hidden_cos  # noqa: F401  (registers 'hidden_cos')
import kdforge.losses.margin_mse  # noqa: F401  (registers 'margin_mse')
import kdforge.losses.minilm  # noqa: F401  (registers 'minilm')
import kdforge.losses.multi_exit  # noqa: F401  (registers 'multi_exit')
import kdforge.losses.pkd  # noqa: F401  (registers 'pkd')
import kdforge.losses.rkd  # noqa: F401  (registers 'rkd')
import kdforge.losses.rocket  # noqa: F401  (registers 'rocket')
import kdforge.losses.sd_dropout  # noqa: F401  (registers 'sd_dropout')
import kdforge.losses.sp  # noqa: F401  (registers 'sp')
import kdforge.losses.span_kl  # noqa: F401  (registers 'span_kl', 'span_hybrid')
import kdforge.losses.tinybert  # noqa: F401  (registers 'tinybert')
import kdforge.losses.token_kd  # noqa: F401  (registers 'token_kd')
import kdforge.losses.uld  # noqa: F401  (registers 'uld')
from kdforge.losses import ce, kd, logit_mse  # noqa: F401  (imported for registration)
from kdforge.losses.base import DistillLoss, Outputs, Targets, WeightedSum
from kdforge.registry import LOSSES
from kdforge.types import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "LOSSES", "DistillLoss", "Outputs", "Targets", "WeightedSum"]
