"""Token-level KD fused with the output projection: the logits are made one chunk of tokens at a time and never
exist in full (the idea of Liger-Kernel's fused linear distillation losses, https://arxiv.org/abs/2410.10989,
in plain PyTorch so it runs on any device).

A causal LM's logits are z = softcap(scale · (h Wᵀ + b)) with h its last hidden states (N, H) and W its output
projection (V, H): at N = 8192 tokens and V = 128k entries the logits alone take 4 GiB in float32, their
log-softmax and gradient as much again, and the teacher's as much. `fused_token_kd` takes the student's h and W
(a `LinearHead`) and, for each chunk of c counted tokens, makes the chunk's student logits, the teacher's rows
(from the teacher's own `LinearHead`, or its logits, or a top-k `TopK`), the divergence, and right away the
gradient with respect to h, W and b (dz = d loss / d z_chunk, then dh = dz W, dW += dzᵀ h, db += Σ dz), so
only c x V temporaries exist. The divergences, temperature, masking, `vocab_size` and the top-k reading are
`token_kd`'s own (`TokenKDLoss.chunk_sum`), so both optimise one objective (tests/losses/test_parity.py).

    softcap   cap · tanh(z / cap)  (Gemma 2's `final_logit_softcapping`), applied after the scale
    scale     a multiplier of the logits (Cohere's `logit_scale`; 1 / `logits_scaling` for Granite)

Both are read from each model's config by the step (`head_transform`), so each side gets its own.

Wiring: the registered step (`fused_linear_step`) makes the student (and an online teacher) return a
`LinearHead` instead of logits while the step runs: the model's decoder (`get_decoder()`) gives h, and
`get_output_embeddings()` gives W and b. Every other path (validation, generation, preflight's own batch)
sees the ordinary model. Given ordinary logits, the loss is `token_kd`. `check_models` (preflight) refuses a
model without those two parts, or whose logits are something else than softcap(scale · (h Wᵀ + b)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdforge.errors import ShapeMismatchError
from kdforge.losses.base import DistillLoss, Outputs, PairedFeatureLoss, Targets, counted_rows
from kdforge.losses.protocols import StepFn, TeacherSource
from kdforge.losses.sampled import SPARSE_SIGNALS
from kdforge.losses.sparse import Tail, TopK
from kdforge.losses.token_kd import Divergence, TokenKDLoss, hand_on, teacher_rows
from kdforge.registry import LOSSES
from kdforge.types import Batch

#: Elements (rows x vocabulary) of one chunk's logits when chunk_size is left to the loss: 2^22 float32
#: values are 16 MiB per temporary (128 tokens at a 32k vocabulary... 32 at 128k).
AUTO_CHUNK_ELEMENTS = 2**22


@dataclass
class LinearHead:
    """What the fused step hands the loss instead of logits: last hidden states (..., H), the output projection
    weight (V, H) and bias (V,), and the model's logit transform (softcap after scale; None / 1: none)."""

    hidden: Tensor
    weight: Tensor
    bias: Tensor | None = None
    softcap: float | None = None
    scale: float = 1.0
    is_linear_head = True  # `kdforge.models.forward.logits_of` passes such an output through as it is

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def transform(self, z: Tensor) -> Tensor:
        """The model's logits from the projection h Wᵀ + b."""
        if self.scale != 1.0:
            z = z * self.scale
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    def logits(self, rows: Tensor | slice = slice(None), vocab: int | None = None) -> Tensor:
        """(c, vocab) logits of the flattened rows `rows` (dense: for checks and small inputs only)."""
        h = self.hidden.flatten(0, -2)[rows]
        bias = None if self.bias is None else self.bias[:vocab]
        return self.transform(nn.functional.linear(h, self.weight[:vocab], bias))


def head_transform(config: object) -> tuple[float | None, float]:
    """(softcap, scale) of a transformers config: `final_logit_softcapping` (Gemma 2), `logit_scale` (Cohere),
    `logits_scaling` (Granite divides by it)."""
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    divide = getattr(config, "logits_scaling", None)
    scale = float(scale) if isinstance(scale, (int, float)) else 1.0
    if isinstance(divide, (int, float)) and divide:
        scale = scale / float(divide)
    return (float(softcap) if softcap else None), scale


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(decoder, output projection) of a causal LM, or ValueError with the fix."""
    get_head, get_decoder = getattr(model, "get_output_embeddings", None), getattr(model, "get_decoder", None)
    head = get_head() if callable(get_head) else None
    decoder = get_decoder() if callable(get_decoder) else None
    for name in ("model", "transformer"):  # transformers' usual names when get_decoder() gives nothing
        if decoder is None or decoder is model:
            decoder = getattr(model, name, None)
    weight = getattr(head, "weight", None)
    if not isinstance(decoder, nn.Module) or not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(
            f"fused_token_kd needs a causal LM with get_decoder() (its last hidden states) and "
            f"get_output_embeddings() (a linear output projection); {type(model).__name__} has not both. "
            "Use token_kd, which reads the logits.")
    return decoder, head


def head_of(model: nn.Module, *args, **kwargs) -> LinearHead:
    """The model's last hidden states for these inputs, with its output projection and logit transform."""
    decoder, head = _parts(model)
    out = decoder(*args, **kwargs)
    hidden = out[0] if isinstance(out, (tuple, list)) else getattr(out, "last_hidden_state", out)
    softcap, scale = head_transform(getattr(model, "config", None))
    return LinearHead(hidden, head.weight, getattr(head, "bias", None), softcap, scale)


@contextlib.contextmanager
def returning_head(model: nn.Module) -> Iterator[None]:
    """While the block runs, calling `model` returns its `LinearHead` instead of logits (hooks still fire)."""
    _parts(model)
    had = "forward" in vars(model)
    previous = vars(model).get("forward")
    model.forward = lambda *args, **kwargs: head_of(model, *args, **kwargs)
    try:
        yield
    finally:
        if had:
            model.forward = previous
        else:
            del model.forward


def check_head(model: nn.Module, who: str) -> None:
    """ValueError unless `model`'s logits are its `LinearHead`'s (one short input, eval mode, no gradient)."""
    _parts(model)
    weight = model.get_output_embeddings().weight
    if weight.device.type == "meta":
        return  # no values to compare; the preflight's device check reports it
    ids = torch.arange(min(8, weight.shape[0]), device=weight.device).unsqueeze(0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(input_ids=ids)
            full = out if isinstance(out, Tensor) else out.logits if hasattr(out, "logits") else out[0]
            fused = head_of(model, input_ids=ids).logits(slice(None)).reshape(full.shape)
    except (TypeError, RuntimeError, IndexError) as exc:
        raise ValueError(f"fused_token_kd could not compare the {who}'s logits with its fused head on a short "
                         f"input_ids batch ({type(exc).__name__}: {exc}); use token_kd.") from None
    finally:
        model.train(was_training)
    gap = float((full.float() - fused.float()).abs().max())
    if gap > 1e-3 * max(1.0, float(full.float().abs().max())):
        raise ValueError(
            f"fused_token_kd: the {who}'s logits differ from softcap(scale · (h Wᵀ + b)) of its decoder's hidden "
            f"states by up to {gap:.3g}; its {type(model).__name__} transforms them in a way the fused loss does not "
            "know (read from the config: final_logit_softcapping, logit_scale, logits_scaling). Use token_kd.")


class _FusedLinearSum(torch.autograd.Function):
    """sum over chunks of value(z_chunk, rows) with z_chunk = hidden[rows] Wᵀ + b, the gradients w.r.t. hidden,
    W and b accumulated chunk by chunk during the forward pass (one c x V chunk alive at a time)."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, value, bounds: list[tuple[int, int]]):
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        want_w = ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.zeros_like(hidden)
        # a low-precision weight's gradient is summed over chunks in float32
        grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32)) if want_w else None
        grad_b = torch.zeros_like(bias, dtype=grad_w.dtype if grad_w is not None else dtype) if want_b else None
        total = hidden.new_zeros((), dtype=dtype)
        for start, stop in bounds:
            h = hidden[start:stop]
            z = nn.functional.linear(h, weight, bias).to(dtype)
            with torch.enable_grad():
                z.requires_grad_(True)
                chunk_value = value(z, start, stop)
                (dz,) = torch.autograd.grad(chunk_value, z)
            total += chunk_value.detach()
            dz = dz.to(hidden.dtype)
            grad_h[start:stop] = dz @ weight
            if grad_w is not None:
                grad_w.addmm_(dz.t().to(grad_w.dtype), h.to(grad_w.dtype))
            if grad_b is not None:
                grad_b += dz.sum(0).to(grad_b.dtype)
            del z, dz, chunk_value
        ctx.grads = (grad_h, None if grad_w is None else grad_w.to(weight.dtype),
                     None if grad_b is None else grad_b.to(bias.dtype))  # handed on once (`hand_on`)
        return total

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        return *hand_on(ctx, grad_output, "fused_token_kd"), None, None


def fused_refusal(terms: Mapping[str, DistillLoss], mutual: bool = False) -> str | None:
    """Why an objective cannot train with the fused step (it hands the terms no student logits), or None."""
    fused = [name for name, term in terms.items() if isinstance(term, FusedTokenKDLoss)]
    if not fused:
        return None
    if mutual:
        return "fused_token_kd cannot train a mutual pair (teacher.online); use token_kd"
    # every other term but one of features alone (pairs of taps) reads the student's logits
    others = [name for name, term in terms.items() if name not in fused
              and (not isinstance(term, PairedFeatureLoss) or getattr(term, "student_views", 0))]
    if others:
        return (f"with fused_token_kd the student's logits are never built, and the terms {sorted(others)} "
                "read them; drop them (feature terms are fine) or use token_kd instead of fused_token_kd")
    return None


def fused_linear_step(standard: StepFn) -> StepFn:
    """The step of `fused_token_kd`: the standard step while the student (and an online teacher) return their
    `LinearHead`; a cached teacher's logits or top-k pass as they are."""

    def fused_step(module: nn.Module, teacher: TeacherSource | None, batch: Batch) -> dict[str, Tensor]:
        inner = getattr(module, "module", module)  # unwrapped from DistributedDataParallel
        models = [inner.student]
        teacher_model = getattr(teacher, "model", None)  # an online teacher; a cache has none
        if isinstance(teacher_model, nn.Module):
            models.append(teacher_model)
        with contextlib.ExitStack() as stack:
            for model in models:
                stack.enter_context(returning_head(model))
            return standard(module, teacher, batch)

    return fused_step


@LOSSES.register(
    "fused_token_kd",
    example={"divergence": "jsd", "beta": 0.5, "temperature": 2.0, "chunk_size": 3},
    paper="Kim & Rush 2016, https://arxiv.org/abs/1606.07947; fused linear + divergence as in Liger-Kernel, "
          "Hsu et al. 2024, https://arxiv.org/abs/2410.10989",
    summary="token_kd from hidden states and the output weight, never building the full logits",
    step=fused_linear_step,
)
class FusedTokenKDLoss(TokenKDLoss):
    """`token_kd` computed from the student's hidden states and output projection, chunk by chunk (see module).

    Args:
        divergence, beta, alpha, temperature, vocab_size, tail: as `token_kd`.
        chunk_size: Tokens per chunk; None (default) picks max(1, 2^22 // V) so one chunk's logits take 16 MiB
            in float32.

    Example:
        >>> import torch
        >>> from kdforge.losses.base import Outputs, Targets
        >>> h, w = torch.randn(2, 5, 4), torch.randn(9, 4, requires_grad=True)
        >>> loss = FusedTokenKDLoss(divergence="jsd", beta=0.5)
        >>> loss(Outputs(logits=LinearHead(h, w)), Outputs(logits=torch.randn(2, 5, 9)), Targets()).shape
        torch.Size([])
    """

    def __init__(self, divergence: Divergence = "forward_kl", beta: float = 0.5, alpha: float = 0.1,
                 temperature: float = 1.0, chunk_size: int | None = None, vocab_size: int | None = None,
                 tail: Tail = "uniform") -> None:
        if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise ValueError(f"The 'chunk_size' parameter of FusedTokenKDLoss must be an integer >= 1 or null. "
                             f"Got {chunk_size!r}.")
        super().__init__(divergence, beta, alpha, temperature, chunk_size or 1, vocab_size, tail)
        self.chunk_size = chunk_size  # None: from the vocabulary

    def chunk_rows(self, vocab: int) -> int:
        return self.chunk_size or max(1, AUTO_CHUNK_ELEMENTS // vocab)

    def check_models(self, student: nn.Module, teacher: nn.Module | None) -> None:
        check_head(student, "student")
        if teacher is not None:
            check_head(teacher, "teacher")

    def forward(self, student: Outputs, teacher: Outputs, targets: Targets) -> Tensor:
        s, t = student.logits, teacher.logits
        if s is None or t is None:
            raise ShapeMismatchError("fused_token_kd: student and teacher outputs are both needed; one is missing.")
        if not isinstance(s, LinearHead):  # ordinary logits (preflight's batch, a plain call): token_kd itself
            if isinstance(t, LinearHead):
                raise ShapeMismatchError("fused_token_kd: the teacher gave hidden states but the student logits; "
                                         "train through the loss's registered step (fused_linear_step).")
            self.chunk_size, saved = self.chunk_rows(s.shape[-1]), self.chunk_size
            try:
                return super().forward(student, teacher, targets)
            finally:
                self.chunk_size = saved
        return self._fused(s, t, targets)

    def _fused(self, s: LinearHead, t: LinearHead | Tensor | TopK, targets: Targets) -> Tensor:
        lead = s.hidden.shape[:-1]
        if isinstance(t, LinearHead):
            t_lead, t_vocab = t.hidden.shape[:-1], t.vocab_size
        elif isinstance(t, TopK):
            t_lead, t_vocab = t.values.shape[:-1], t.vocab_size
        elif isinstance(t, SPARSE_SIGNALS):  # a sampled / top-k + tail cache (kdforge.losses.sampled)
            t_lead, t_vocab = t.lead_shape, t.vocab_size
        else:
            t_lead, t_vocab = t.shape[:-1], t.shape[-1]
        if t_lead != lead:
            raise ShapeMismatchError(f"fused_token_kd: the student covers positions {tuple(lead)} but the teacher "
                                     f"{tuple(t_lead)}. Feed both models the same input_ids.")
        vocab = self.compared_vocab(s.vocab_size, t_vocab, "fused_token_kd")
        rows = counted_rows(lead, targets, s.hidden.device).nonzero().squeeze(1)
        n = len(rows)
        weight, bias = s.weight[:vocab], None if s.bias is None else s.bias[:vocab]
        hidden = s.hidden.flatten(0, -2)[rows]
        if n == 0:  # keeps the graph (and DDP's gradient sync) intact when nothing counts
            return s.hidden.sum() * 0.0 + weight.sum() * 0.0
        if isinstance(t, TopK):
            t = TopK(t.values.flatten(0, -2), t.indices.flatten(0, -2),
                     None if t.logsumexp is None else t.logsumexp.flatten(), t.vocab_size, t.tail)
        elif isinstance(t, SPARSE_SIGNALS):
            t = t.flat()
        elif isinstance(t, Tensor):
            t = t.flatten(0, -2)
        size = self.chunk_rows(vocab)
        bounds = [(start, min(start + size, n)) for start in range(0, n, size)]
        ones = torch.ones(size, device=hidden.device)

        def value(z: Tensor, start: int, stop: int) -> Tensor:
            if isinstance(t, LinearHead):
                with torch.no_grad():
                    t_chunk: Tensor | TopK = t.logits(rows[start:stop], vocab)
            else:
                t_chunk = teacher_rows(t, rows[start:stop])
            return self.chunk_sum(s.transform(z), t_chunk, ones[: stop - start])

        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            total = _FusedLinearSum.apply(hidden, weight, bias, value, bounds)
        else:
            with torch.no_grad():
                total = sum(value(nn.functional.linear(hidden[a:b], weight, bias), a, b) for a, b in bounds)
        return total / n * self.temperature**2
