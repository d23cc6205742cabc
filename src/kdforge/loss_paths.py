"""Every way kdforge computes a token-level distillation loss (a "path"), and which options each honours.

One entry of `PATHS` is one path: the registered loss, what it reads from the student (logits, or hidden
states + output weight), what it reads from the teacher (logits, hidden states + weight, or a cache format),
the fixed arguments that make it that path (a chunk size), and, per option of `OPTIONS`, the values it
honours. tests/losses/test_parity.py runs every path on every combination of option values against the float64
reference (`kdforge.losses.reference`), on value and gradient; a value a path does not honour must be refused
(the loss raises, or the preflight check of its teacher format returns a reason), never ignored. The table
"What each path supports" in docs/llm.md is generated from `PATHS` (`python -m kdforge.loss_paths --markdown`),
and a test fails when the two differ.

Adding a cache format (e.g. sampled tokens) is one entry: write a `TeacherFormat` with `encode` (full teacher
logits (B, T, V) -> what the loss receives as `Outputs.logits`), `reference` (that signal -> (N, V) float64
log-probabilities or logits of the distribution it stands for, written from its definition) and `refusal` (the
preflight check a recipe with that cache runs on each loss term, e.g. `lambda term: topk_refusal(term,
"sampled")`), then append a `LossPath(name=..., loss="token_kd", student="logits", teacher=YOUR_FORMAT,
honours={...})` to `PATHS` (one more with `loss="fused_token_kd", student="head"` checks the fused loss on it
too), run `python -m kdforge.loss_paths --markdown` and paste its output over the table in docs/llm.md.
`honours` lists, per option, the values the path computes exactly; every other value must be refused. `gaps`
names values a path neither honours nor refuses today (the test checks they still differ from the reference, so
closing one fails the test until the entry moves to `honours`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from kdforge.losses.reference import topk_teacher_logits
from kdforge.losses.sampled import Sampled
from kdforge.losses.sparse import TopK, topk_refusal
from kdforge.losses.token_kd import DIVERGENCES

#: option -> the values the parity test tries. positions: "mask" = Targets.mask (and labels -100 under it),
#: "ignore_index" = labels -100 alone; vocab: "padded" = models of different padded sizes with `vocab_size`
#: set to the real vocabulary; logits: the model's transform (soft cap, scale) before the softmax.
OPTIONS: dict[str, tuple[Any, ...]] = {
    "divergence": DIVERGENCES,
    "temperature": (1.0, 2.0),
    "positions": ("all", "mask", "ignore_index"),
    "vocab": ("same", "padded"),
    "logits": ("plain", "softcap", "scale"),
}


@dataclass(frozen=True)
class TeacherFormat:
    """A teacher signal other than dense logits (a cache format)."""

    name: str
    encode: Callable[[Tensor], Any]  # (B, T, V) teacher logits -> what the loss receives
    reference: Callable[[Any], Tensor]  # that signal -> (N, V) float64 logits of the distribution it stands for
    refusal: Callable[[Any], str | None]  # preflight: why a loss term cannot read this format, or None


def _topk_encode(logits: Tensor, k: int = 5) -> TopK:
    values, indices = logits.topk(k, dim=-1)
    return TopK(values, indices, torch.logsumexp(logits, dim=-1), logits.shape[-1], tail="uniform")


def _topk_reference(topk: TopK) -> Tensor:
    flat = topk.values.flatten(0, -2)
    return topk_teacher_logits(flat, topk.indices.flatten(0, -2), topk.logsumexp.flatten(), topk.vocab_size,
                               topk.tail or "uniform")


TOPK = TeacherFormat("top-k cache (k=5, uniform tail)", _topk_encode, _topk_reference, topk_refusal)


def _sampled_encode(logits: Tensor) -> Sampled:
    """12 draws per position (kdforge.cache.formats), with the entropy of the drawn distribution itself, so the
    loss is exactly KL(draws || student): the parity of the formula (its unbiasedness: tests/losses/test_sampled)."""
    from kdforge.cache.formats import sample_tokens

    ids, counts, _, _ = sample_tokens(logits.detach(), 12, 1.0, 0, torch.arange(logits.shape[0]))
    p = counts.double() / 12
    entropy = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1)
    return Sampled(ids, counts, None, entropy, 12, logits.shape[-1])


def _sampled_reference(signal: Sampled) -> Tensor:
    flat = signal.flat()
    probs = torch.zeros(flat.indices.shape[0], signal.vocab_size, dtype=torch.float64)
    probs.scatter_add_(-1, flat.indices.long(), flat.counts.double() / signal.samples)
    return probs.log()


SAMPLED = TeacherFormat("sampled cache (12 draws)", _sampled_encode, _sampled_reference,
                        lambda term: topk_refusal(term, "sampled"))

Support = tuple[Any, ...]


@dataclass(frozen=True)
class LossPath:
    """One way a token-level loss is computed; `honours[option]` lists the values it honours (missing: all)."""

    name: str
    loss: str  # the registered loss
    student: Literal["logits", "head"]  # "head": hidden states + output weight (fused_token_kd's LinearHead)
    teacher: Literal["logits", "head"] | TeacherFormat
    args: Mapping[str, Any] = field(default_factory=dict)  # fixed loss arguments that make this path
    honours: Mapping[str, Support] = field(default_factory=dict)
    gaps: Mapping[tuple[str, Any], str] = field(default_factory=dict)  # (option, value) -> what happens instead
    notes: Mapping[str, str] = field(default_factory=dict)  # option -> a word for the table

    def supports(self, option: str, value: Any) -> bool:
        return value in self.honours.get(option, OPTIONS[option])


_IN_LOGITS = {"logits": "applied by the model to the logits it hands over"}
_FORWARD = {"divergence": ("forward_kl",)}

PATHS: list[LossPath] = [
    LossPath("token_kd, dense", "token_kd", "logits", "logits", {"chunk_size": 1024}, notes=_IN_LOGITS),
    LossPath("token_kd, chunked", "token_kd", "logits", "logits", {"chunk_size": 3}, notes=_IN_LOGITS),
    LossPath("token_kd, top-k cache", "token_kd", "logits", TOPK, {"chunk_size": 3},
             {**_FORWARD, "vocab": ("same",)}, notes=_IN_LOGITS),
    LossPath("token_kd, sampled cache", "token_kd", "logits", SAMPLED, {"chunk_size": 3},
             {**_FORWARD, "vocab": ("same",), "temperature": (1.0,)}, notes=_IN_LOGITS),
    LossPath("fused_token_kd, online teacher", "fused_token_kd", "head", "head", {"chunk_size": 3}),
    LossPath("fused_token_kd, cached logits", "fused_token_kd", "head", "logits", {"chunk_size": 3},
             notes={"logits": "student: in the fused head; teacher: in its cached logits"}),
    LossPath("fused_token_kd, top-k cache", "fused_token_kd", "head", TOPK, {"chunk_size": 3},
             {**_FORWARD, "vocab": ("same",)},
             notes={"logits": "student: in the fused head; teacher: in its cached logits"}),
    LossPath("fused_token_kd, sampled cache", "fused_token_kd", "head", SAMPLED, {"chunk_size": 3},
             {**_FORWARD, "vocab": ("same",), "temperature": (1.0,)},
             notes={"logits": "student: in the fused head; teacher: in its cached draws"}),
    LossPath("kd", "kd", "logits", "logits", {}, {**_FORWARD, "vocab": ("same",)},
             notes=_IN_LOGITS),
    LossPath("kd, top-k cache", "kd", "logits", TOPK, {}, {**_FORWARD, "vocab": ("same",)},
             notes=_IN_LOGITS),
]


def _cell(path: LossPath, option: str) -> str:
    values = OPTIONS[option]
    honoured = [v for v in values if path.supports(option, v)]
    gaps = [f"{value}: {text}" for (opt, value), text in path.gaps.items() if opt == option]
    honoured = [v for v in honoured if (option, v) not in path.gaps]
    refused = [v for v in values if not path.supports(option, v)]
    text = "all" if len(honoured) == len(values) else ", ".join(str(v) for v in honoured)
    if refused:
        text += "; refused: " + ", ".join(str(v) for v in refused)
    if gaps:
        text += "; " + "; ".join(gaps)
    if option in path.notes:
        text += f" ({path.notes[option]})"
    return text


def markdown_table(paths: list[LossPath] | None = None) -> str:
    """The table "what each path supports", one row per path, one column per option (docs/llm.md)."""
    paths = PATHS if paths is None else paths
    head = ["path", "loss", "student reads", "teacher reads", *OPTIONS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for path in paths:
        teacher = path.teacher.name if isinstance(path.teacher, TeacherFormat) else path.teacher
        student = "hidden states + output weight" if path.student == "head" else "logits"
        teacher = "hidden states + output weight" if teacher == "head" else teacher
        cells = [path.name, f"`{path.loss}`", student, teacher, *(_cell(path, option) for option in OPTIONS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdforge.loss_paths", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the table of docs/llm.md")
    parser.parse_args(argv)
    print(markdown_table(), end="")


if __name__ == "__main__":
    main()
