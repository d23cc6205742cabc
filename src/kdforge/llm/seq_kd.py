"""Sequence-level knowledge distillation: Kim & Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016.

https://arxiv.org/abs/1606.07947

The teacher decodes a continuation for every prompt (greedy, beam search or sampling); the student is then
trained with plain cross-entropy (`ce`) on the teacher's outputs instead of the references. Because only
token ids cross from teacher to student, this works across vocabularies after re-tokenising the text (and is
what the token_kd vocabulary error points to).

`generate_dataset` returns the rows as a `TensorData` (`input_ids`, `attention_mask`, `labels`, `mask`,
`index`; labels count only the generated tokens, not the prompt) and a provenance record: the teacher's
fingerprint (SHA-256 of its class and weights), the decoding settings, the seed and a digest of the prompts
and outputs. Decoding batch b is seeded with `seed` and b alone, so the same seed gives the same dataset (a
test checks this), and `save_generated` / `load_generated` keep rows and provenance together.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from kdforge.cache.hashing import teacher_fingerprint
from kdforge.lm.rows import EOS, PAD, continuation_lengths, lm_rows
from kdforge.types import TensorData


@dataclass(frozen=True)
class Decoding:
    """How the teacher decodes: greedy, beam (num_beams) or sample (temperature, top_k, top_p)."""

    strategy: Literal["greedy", "beam", "sample"] = "greedy"
    max_new_tokens: int = 32
    num_beams: int = 4
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "beam", "sample"):
            raise ValueError(f"Decoding.strategy must be 'greedy', 'beam' or 'sample'; got {self.strategy!r}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"Decoding.max_new_tokens must be >= 1; got {self.max_new_tokens}.")

    def generate_kwargs(self) -> dict:
        kwargs = {"max_new_tokens": self.max_new_tokens, "eos_token_id": EOS, "pad_token_id": PAD}
        if self.strategy == "greedy":
            return {**kwargs, "do_sample": False, "num_beams": 1}
        if self.strategy == "beam":
            return {**kwargs, "do_sample": False, "num_beams": self.num_beams}
        return {**kwargs, "do_sample": True, "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}


@torch.no_grad()
def generate_dataset(teacher: nn.Module, prompts: Tensor, decoding: Decoding = Decoding(), seed: int = 0,
                     batch_size: int = 64) -> tuple[TensorData, dict]:
    """Teacher continuations of `prompts` (N, P) token ids (equal length, no padding) and their provenance."""
    if prompts.dim() != 2 or prompts.shape[1] < 1:
        raise ValueError(f"generate_dataset: prompts must be (N, P) token ids; got shape {tuple(prompts.shape)}.")
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    width = prompts.shape[1] + decoding.max_new_tokens
    rows = []
    gpus = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=gpus):  # the caller's random state is left as it was
            for b, start in enumerate(range(0, len(prompts), batch_size)):
                torch.manual_seed(seed * 1_000_003 + b)  # each batch's sampling depends on (seed, batch) only
                chunk = prompts[start:start + batch_size].to(device)
                out = teacher.generate(input_ids=chunk, attention_mask=torch.ones_like(chunk),
                                       **decoding.generate_kwargs())
                padded = torch.full((len(chunk), width), PAD, dtype=torch.long)
                padded[:, : out.shape[1]] = out.cpu()
                rows.append(padded)
    finally:
        teacher.train(was_training)
    ids = torch.cat(rows)
    lengths = continuation_lengths(ids, prompts.shape[1])
    ids[torch.arange(width).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    data = lm_rows(ids, lengths, prompt_lengths=torch.full((len(ids),), prompts.shape[1]))
    provenance = {
        "method": "sequence-level KD (Kim & Rush 2016)",
        "teacher_fingerprint": teacher_fingerprint(teacher),
        "teacher_class": type(teacher).__qualname__,
        "decoding": asdict(decoding),
        "seed": seed,
        "batch_size": batch_size,
        "prompts": {"count": len(prompts), "length": prompts.shape[1],
                    "sha256": hashlib.sha256(prompts.cpu().numpy().astype("<i8").tobytes()).hexdigest()},
        "outputs_sha256": hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest(),
        "generated_tokens": int((lengths - prompts.shape[1]).sum()),
    }
    return data, provenance


def unigram_f1(candidate: list[int], reference: list[int]) -> float:
    """Unigram F1 between two token lists (multiset overlap): the similarity interpolated seq-KD maximises."""
    if not candidate or not reference:
        return 0.0
    common = sum((Counter(candidate) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(candidate), common / len(reference)
    return 2 * precision * recall / (precision + recall)


@torch.no_grad()
def interpolated_dataset(teacher: nn.Module, prompts: Tensor, references: list[list[int]], num_beams: int = 4,
                         max_new_tokens: int = 32) -> tuple[TensorData, dict]:
    """Interpolated sequence-level KD (Kim & Rush 2016, section 3.2): beam search keeps `num_beams` candidate
    continuations per prompt and the one most similar to the reference continuation is the training target.
    Kim & Rush rank by sentence BLEU; here the similarity is unigram F1 on token ids (`unigram_f1`).
    Beam search is deterministic, so no seed is involved; the provenance records the mean similarity."""
    if len(references) != len(prompts):
        raise ValueError(f"interpolated_dataset: {len(prompts)} prompts but {len(references)} references.")
    decoding = Decoding("beam", max_new_tokens=max_new_tokens, num_beams=num_beams)
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    p_len, width = prompts.shape[1], prompts.shape[1] + max_new_tokens
    chosen, scores = [], []
    try:
        for i in range(len(prompts)):
            out = teacher.generate(input_ids=prompts[i:i + 1].to(device),
                                   attention_mask=torch.ones_like(prompts[i:i + 1]).to(device),
                                   num_return_sequences=num_beams, **decoding.generate_kwargs()).cpu()
            padded = torch.full((len(out), width), PAD, dtype=torch.long)
            padded[:, : out.shape[1]] = out
            lengths = continuation_lengths(padded, p_len)
            candidates = [padded[j, p_len:lengths[j]].tolist() for j in range(len(padded))]
            candidates = [c[:-1] if c and c[-1] == EOS else c for c in candidates]
            similarity = [unigram_f1(c, references[i]) for c in candidates]
            best = max(range(len(candidates)), key=lambda j: (similarity[j], -j))  # ties: the higher-ranked beam
            chosen.append(padded[best])
            scores.append(similarity[best])
    finally:
        teacher.train(was_training)
    ids = torch.stack(chosen)
    lengths = continuation_lengths(ids, p_len)
    ids[torch.arange(width).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    data = lm_rows(ids, lengths, prompt_lengths=torch.full((len(ids),), p_len))
    provenance = {
        "method": "interpolated sequence-level KD (Kim & Rush 2016), unigram-F1 selection",
        "teacher_fingerprint": teacher_fingerprint(teacher), "teacher_class": type(teacher).__qualname__,
        "decoding": asdict(decoding), "seed": None,
        "prompts": {"count": len(prompts), "length": p_len,
                    "sha256": hashlib.sha256(prompts.cpu().numpy().astype("<i8").tobytes()).hexdigest()},
        "outputs_sha256": hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest(),
        "mean_similarity": sum(scores) / max(len(scores), 1),
        "generated_tokens": int((lengths - p_len).sum()),
    }
    return data, provenance


def prompts_from(data: TensorData, prompt_len: int) -> Tensor:
    """The first `prompt_len` tokens of every row with at least prompt_len + 1 real tokens (BOS counts)."""
    ids, real = data.tensors["input_ids"], data.tensors["attention_mask"].sum(1)
    return ids[real > prompt_len, :prompt_len].clone()


def save_generated(data: TensorData, provenance: dict, directory: str | Path) -> Path:
    """rows.safetensors + provenance.json in `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in data.tensors.items()}, str(directory / "rows.safetensors"))
    (directory / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return directory


def load_generated(directory: str | Path) -> tuple[TensorData, dict]:
    """The rows and provenance `save_generated` wrote; the outputs digest is checked against the rows."""
    from safetensors.torch import load_file

    directory = Path(directory)
    tensors = load_file(str(directory / "rows.safetensors"))
    provenance = json.loads((directory / "provenance.json").read_text())
    digest = hashlib.sha256(tensors["input_ids"].numpy().astype("<i8").tobytes()).hexdigest()
    if digest != provenance["outputs_sha256"]:
        raise ValueError(f"{directory}: rows.safetensors does not match provenance.json (outputs_sha256); "
                         "regenerate the dataset.")
    return TensorData(tensors, name=f"teacher outputs ({directory.name})"), provenance
