"""Encoder students built from a `transformers` teacher, and sentence embeddings from an encoder's hidden states.

`student_from_teacher` makes the compact student the BERT-compression papers start from: the teacher's config
with fewer layers, the embeddings and the kept layers copied from the teacher (DistilBERT, Sanh et al. 2019,
takes every other layer; PKD and TinyBERT pick layers by a list). It works for any `transformers` model whose
layers sit in one `nn.ModuleList` of `config.num_hidden_layers` blocks (BERT, RoBERTa, ELECTRA, DistilBERT,
MiniLM, XLM-R, DeBERTa ...).

`SentenceEncoder` turns an encoder into a sentence-embedding model (Reimers & Gurevych 2019): mean (or [CLS])
pooling of the last hidden states over the real tokens, optionally L2-normalised. Its forward returns the
(B, D) embedding as a plain tensor, so the training loop reads it as the model's "logits" and `embed_mse`
regresses one model's embedding onto the other's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdforge.errors import KDForgeError, RecipeError

POOLINGS = ("mean", "cls")


def layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted path and the `nn.ModuleList` holding a transformer's `config.num_hidden_layers` blocks."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise KDForgeError(
            f"{type(model).__name__} has no config.num_hidden_layers; student_from_teacher needs a transformers "
            "encoder (BertModel, DistilBertModel, RobertaModel ...)."
        )
    found = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(found) != 1:
        where = ", ".join(path for path, _ in found) or "none"
        raise KDForgeError(
            f"{type(model).__name__}: expected one ModuleList of its {n} layers; found {len(found)} ({where})."
        )
    return found[0]


def choose_layers(num_teacher: int, layers: int | str | Sequence[int]) -> list[int]:
    """Teacher layer indices (0-based) the student keeps.

    `layers` is 'every_other' (DistilBERT: teacher layers 0, 2, 4 ...), an int n (n layers evenly spaced,
    ending at the teacher's last), or an explicit list of teacher indices in increasing order.
    """
    if layers == "every_other":
        return list(range(0, num_teacher, 2))
    if isinstance(layers, bool):
        raise ValueError(f"student_from_teacher: layers must be 'every_other', an int or a list; got {layers!r}.")
    if isinstance(layers, int):
        if not 1 <= layers <= num_teacher:
            raise ValueError(
                f"student_from_teacher: layers={layers} must be between 1 and the teacher's {num_teacher} layers."
            )
        return [round((i + 1) * num_teacher / layers) - 1 for i in range(layers)]
    if isinstance(layers, str):
        raise ValueError(f"student_from_teacher: unknown layers {layers!r}; use 'every_other', an int or a list.")
    chosen = list(layers)
    if not chosen:
        raise ValueError("student_from_teacher: layers is an empty list; name at least one teacher layer.")
    bad = [j for j in chosen if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < num_teacher]
    if bad:
        raise ValueError(
            f"student_from_teacher: teacher layers {bad} are out of range; the teacher has {num_teacher} layers, "
            f"indexed 0 to {num_teacher - 1}."
        )
    if chosen != sorted(set(chosen)):
        raise ValueError(f"student_from_teacher: layers {chosen} must be distinct and increasing.")
    return chosen


def narrow_config(config: Any, hidden_size: int | None = None, intermediate_size: int | None = None,
                  num_attention_heads: int | None = None) -> Any:
    """A copy of a teacher's config with a smaller width; raises ValueError naming the argument that cannot fit.

    By default the teacher's head size is kept (heads = hidden_size / head size), so every student head is a
    whole teacher head when weights are copied by `student_from_teacher`.
    """
    config = copy.deepcopy(config)
    sizes = {"hidden_size": hidden_size, "intermediate_size": intermediate_size,
             "num_attention_heads": num_attention_heads}
    for name, value in sizes.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        teacher_value = getattr(config, name, None)
        if not isinstance(teacher_value, int):
            raise ValueError(f"{name}: the teacher's config ({type(config).__name__}) has no {name}, so this "
                             "student cannot be narrowed that way. Leave it out.")
        if name != "num_attention_heads" and value > teacher_value:  # more, smaller heads still fit
            raise ValueError(f"{name}={value} is larger than the teacher's {teacher_value}; weights are copied by "
                             f"keeping part of each teacher tensor, so pick {name} <= {teacher_value}.")
    teacher_hidden, teacher_heads = config.hidden_size, config.num_attention_heads
    head_size = teacher_hidden // teacher_heads
    hidden = hidden_size or teacher_hidden
    if num_attention_heads is None:
        if hidden % head_size:
            raise ValueError(
                f"hidden_size={hidden} is not a multiple of the teacher's head size {head_size} (hidden size "
                f"{teacher_hidden} / {teacher_heads} heads). Pick a multiple of {head_size}, or give "
                "num_attention_heads (heads would then not be whole teacher heads).")
        heads = hidden // head_size
    else:
        heads = num_attention_heads
        if hidden % heads:
            raise ValueError(f"num_attention_heads={heads} does not divide hidden_size={hidden}; pick a divisor.")
    config.hidden_size = hidden
    config.num_attention_heads = heads
    if intermediate_size is not None:
        config.intermediate_size = intermediate_size
    return config


def _take_leading(value: Tensor, shape: torch.Size, key: str) -> Tensor:
    """The leading `shape` block of a teacher tensor: along each dimension that shrank, its first entries."""
    if value.shape == shape:
        return value.clone()
    if value.dim() != len(shape) or any(s > t for s, t in zip(shape, value.shape, strict=True)):
        raise KDForgeError(f"student_from_teacher: {key} is {tuple(value.shape)} in the teacher but "
                           f"{tuple(shape)} in the student; it cannot be cut from the teacher's tensor.")
    return value[tuple(slice(0, s) for s in shape)].clone()


def student_from_teacher(teacher: nn.Module, layers: int | str | Sequence[int] = "every_other",
                         hidden_size: int | None = None, intermediate_size: int | None = None,
                         num_attention_heads: int | None = None) -> nn.Module:
    """A copy of `teacher` that keeps only some of its transformer layers, optionally narrower (weights copied,
    not shared).

    The embeddings, the kept layers (in order), the pooler and any task head are copied from the teacher; the
    teacher is not modified. With a smaller `hidden_size` / `intermediate_size`, each teacher tensor is cut to
    the student's shape by keeping the first entries along every dimension that shrank (the "weight selection"
    initialisation of Xu et al., "Initializing Models with Larger Ones", ICLR 2024,
    https://arxiv.org/abs/2311.18823). The same index set is then kept for one semantic dimension in every
    tensor it touches: hidden channels 0..h-1 in the embeddings, every LayerNorm and both sides of every
    Linear; intermediate units 0..i-1 in both FFN matrices; and, as the head size is kept, the first
    h / head_size whole heads in the query, key, value and attention-output matrices.

    Why the first entries and not the most important ones (largest norm, as structured-pruning
    initialisations choose): the all-heads dimension of Q/K/V has the same size as the hidden dimension, so
    shapes alone cannot tell which axis of a tensor is which; choosing by importance would need per-architecture
    knowledge of every parameter name. The leading slice is consistent for any architecture by construction.

    Args:
        teacher: A `transformers` model (any head) whose layers form one ModuleList.
        layers: 'every_other' (DistilBERT), an int (that many layers, evenly spaced, the last one kept), or a
            list of 0-based teacher layer indices.
        hidden_size: The student's width (<= the teacher's); default the teacher's.
        intermediate_size: The student's FFN width (<= the teacher's); default the teacher's.
        num_attention_heads: Default: hidden_size / the teacher's head size (whole heads are kept).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> teacher = BertModel(BertConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        ...                               intermediate_size=32, vocab_size=50))
        >>> student_from_teacher(teacher, "every_other").config.num_hidden_layers
        2
        >>> student_from_teacher(teacher, 2, hidden_size=8, intermediate_size=16).config.num_attention_heads
        1
    """
    path, teacher_layers = layer_list(teacher)
    keep = choose_layers(len(teacher_layers), layers)
    config = narrow_config(teacher.config, hidden_size, intermediate_size, num_attention_heads)
    config.num_hidden_layers = len(keep)
    student = type(teacher)(config)
    shapes = {key: value.shape for key, value in student.state_dict().items()}
    prefix = f"{path}."
    state = {}
    for key, value in teacher.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) not in keep:
                continue
            key = f"{prefix}{keep.index(int(index))}.{rest}"
        if key in shapes:
            state[key] = _take_leading(value, shapes[key], key)
        else:
            state[key] = value.clone()  # reported as unexpected below
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise KDForgeError(f"student_from_teacher: weights did not fit (missing {missing}, unexpected {unexpected}).")
    return student.train(teacher.training)


def load_student_from_teacher(name: str, args: dict[str, Any], where: str,
                              base_dir: str | Path | None = None) -> nn.Module:
    """The `hf_student:<teacher folder or hub name>` model spec: load the teacher with `hf:`'s rules (`task`
    picks the head), then `student_from_teacher(teacher, layers, hidden_size, intermediate_size,
    num_attention_heads)`; `layers` defaults to 'every_other'.

    A saved student rebuilds the same way (the teacher must still be loadable), then its own weights load."""
    from kdforge.models.hf import load_hf_model

    args = dict(args)
    layers = args.pop("layers", "every_other")
    widths = {k: args.pop(k) for k in ("hidden_size", "intermediate_size", "num_attention_heads") if k in args}
    teacher = load_hf_model(name, args, where, base_dir)
    try:
        choose_layers(len(layer_list(teacher)[1]), layers)
    except ValueError as exc:
        raise RecipeError(f"{where}.args.layers: {exc}") from None
    try:
        narrow_config(teacher.config, **widths)
    except ValueError as exc:  # the message starts with the argument's name
        raise RecipeError(f"{where}.args.{exc}") from None
    return student_from_teacher(teacher, layers, **widths)


def pool_hidden(hidden: Tensor, attention_mask: Tensor | None, pooling: str = "mean") -> Tensor:
    """(B, T, D) token states -> (B, D): the mean over real tokens (mask 1), or the first ([CLS]) token."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
    if hidden.dim() != 3:
        raise ValueError(f"pool_hidden needs (batch, tokens, width) hidden states; got {tuple(hidden.shape)}.")
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """A `transformers` encoder with pooling on top: forward returns the (B, D) sentence embedding.

    With `pooling='mean'` and `normalize=True` on all-MiniLM-L6-v2 this is exactly the sentence-transformers
    embedding. Inner layers stay reachable for taps as `encoder.<path>` (e.g. `encoder.encoder.layer.1`).

    Args:
        encoder: A model returning `last_hidden_state` (AutoModel, BertModel ...).
        pooling: 'mean' over tokens where attention_mask is 1, or 'cls' (the first token).
        normalize: L2-normalise the pooled embedding.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                             intermediate_size=32, vocab_size=50))
        >>> SentenceEncoder(bert)(torch.tensor([[1, 5, 7, 0]]), torch.tensor([[1, 1, 1, 0]])).shape
        torch.Size([1, 16])
    """

    def __init__(self, encoder: nn.Module, pooling: str = "mean", normalize: bool = True) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"The 'pooling' parameter of SentenceEncoder must be one of {POOLINGS}; got {pooling!r}.")
        self.encoder = encoder
        self.pooling = pooling
        self.normalize = normalize
        # The embedding of a second text (a translation, for multilingual distillation) passes through here,
        # so a tap on `pair_embedding` captures it.
        self.pair_embedding = nn.Identity()

    @property
    def config(self) -> Any:
        return self.encoder.config

    def embed(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        emb = pool_hidden(out.last_hidden_state, attention_mask, self.pooling)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, pair_input_ids: Tensor | None = None,
                pair_attention_mask: Tensor | None = None) -> Tensor:
        """The embedding of `input_ids`; with `pair_input_ids` (the translated sentence) that text is embedded
        too and sent through `pair_embedding` for a tap to capture."""
        if pair_input_ids is not None:
            self.pair_embedding(self.embed(pair_input_ids, pair_attention_mask))
        return self.embed(input_ids, attention_mask)


class DualEncoder(nn.Module):
    """A bi-encoder ranker: query and passages embedded separately, scored by dot product (for `margin_mse`).

    forward(query_input_ids (B, T), query_attention_mask, doc_input_ids (B, n, T'), doc_attention_mask)
    returns (B, n) scores, e.g. n = 2 for (positive, negative) as in margin-MSE distillation from a
    cross-encoder. The same `SentenceEncoder` (shared weights) embeds queries and passages.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> bert = BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        ...                             intermediate_size=32, vocab_size=50))
        >>> q, d = torch.randint(1, 50, (3, 4)), torch.randint(1, 50, (3, 2, 5))
        >>> DualEncoder(SentenceEncoder(bert, normalize=False))(q, torch.ones_like(q), d, torch.ones_like(d)).shape
        torch.Size([3, 2])
    """

    def __init__(self, encoder: SentenceEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, query_input_ids: Tensor, query_attention_mask: Tensor, doc_input_ids: Tensor,
                doc_attention_mask: Tensor) -> Tensor:
        batch, n, length = doc_input_ids.shape
        q = self.encoder.embed(query_input_ids, query_attention_mask)  # (B, D)
        d = self.encoder.embed(doc_input_ids.reshape(batch * n, length),
                               doc_attention_mask.reshape(batch * n, length)).reshape(batch, n, -1)  # (B, n, D)
        return torch.einsum("bd,bnd->bn", q, d)


def mlm_mask(batch: dict[str, Tensor], mask_token_id: int, vocab_size: int, special_ids: Sequence[int] = (),
             probability: float = 0.15, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """BERT's masked-LM corruption (Devlin et al. 2019), as DistilBERT trains with it: a copy of `batch` where
    `probability` of the real, non-special tokens are chosen; of those 80 % become `mask_token_id`, 10 % a
    random token, 10 % stay. `labels` holds the original id at chosen positions and -100 elsewhere, and `mask`
    marks the chosen positions, so `ce` (MLM labels) and `kd` (teacher MLM logits) both count only those.

    Teacher and student must see the same corrupted `input_ids`: apply this once per batch, before both."""
    if not 0 < probability < 1:
        raise ValueError(f"mlm_mask: probability must be in (0, 1); got {probability!r}.")
    ids = batch["input_ids"]
    real = batch.get("attention_mask", torch.ones_like(ids)).bool()
    for special in special_ids:
        real &= ids != special
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & real
    action = torch.rand(ids.shape, generator=generator)
    corrupted = ids.clone()
    corrupted[chosen & (action < 0.8)] = mask_token_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    corrupted[swap] = torch.randint(0, vocab_size, ids.shape, generator=generator)[swap]
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return {**batch, "input_ids": corrupted, "labels": labels, "mask": chosen}


def tokenize_sentences(tokenizer: Any, sentences: Sequence[str], max_length: int = 128,
                       **extra: Tensor) -> dict[str, Tensor]:
    """A dict batch for kdforge's loop: padded `input_ids`, `attention_mask`, `mask` (the attention mask as bool:
    the real tokens token-level losses count), `index` (row ids), plus `extra` tensors (one row per sentence,
    e.g. cached teacher embeddings or labels)."""
    enc = tokenizer(list(sentences), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
             "mask": enc["attention_mask"].bool(), "index": torch.arange(len(sentences))}
    for key, value in extra.items():
        if len(value) != len(sentences):
            raise ValueError(f"tokenize_sentences: {key!r} has {len(value)} rows for {len(sentences)} sentences.")
        batch[key] = value
    return batch


__all__ = ["POOLINGS", "DualEncoder", "SentenceEncoder", "choose_layers", "layer_list", "load_student_from_teacher",
           "mlm_mask", "narrow_config", "pool_hidden",
           "student_from_teacher", "tokenize_sentences"]
