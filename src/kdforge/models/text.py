"""Text models recipes can name without downloads: `builtin:bert`, `builtin:bilstm`, `builtin:textcnn`.

All take `input_ids` and `attention_mask` (B, L) with padding id 0 (what kdforge.data.text's sources give) and
size themselves from the data: `input_shape` is [seq_len] and `num_classes` the data's class count. List
`inputs: [input_ids, attention_mask]` in the recipe's model section.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdforge.registry import MODELS

BERT_TASKS = ("sequence_classification", "token_classification", "masked_lm", "base")


def _require_vocab(model: str, vocab_size: int | None) -> int:
    if vocab_size is None or vocab_size < 1:
        raise ValueError(f"{model} needs the argument vocab_size (the tokenizer's vocabulary size, e.g. the data's "
                         f"args.vocab_size); got {vocab_size!r}.")
    return vocab_size


@MODELS.register("bert")
def bert(input_shape: Sequence[int], num_classes: int, vocab_size: int | None = None,
         task: str = "sequence_classification", layers: int = 2, hidden: int = 128, heads: int = 2,
         intermediate: int | None = None, dropout: float = 0.1, seed: int = 0) -> nn.Module:
    """A random-weight `transformers` BERT built from a config (no download), with the head `task` names.

    Args:
        input_shape: [seq_len] (filled in from the data); max_position_embeddings is set to seq_len.
        num_classes: num_labels of the classification heads (filled in from the data); for masked_lm it must
            equal vocab_size (text:stdlib_mlm sets num_classes to the vocabulary size).
        vocab_size: Size of the tokenizer's vocabulary (required).
        task: sequence_classification (B, K) | token_classification (B, L, K) | masked_lm (B, L, V) | base
            (the encoder alone: no logits, for taps or a SentenceEncoder).
        layers, hidden, heads: Depth, width and attention heads (hidden must be divisible by heads).
        intermediate: Feed-forward width; 4 * hidden when omitted (BERT's ratio).
        dropout: Hidden and attention dropout.
        seed: Seed of the random initialisation.
    """
    import transformers

    vocab_size = _require_vocab("builtin:bert", vocab_size)
    if task not in BERT_TASKS:
        raise ValueError(f"builtin:bert: unknown task {task!r}; choose one of {', '.join(BERT_TASKS)}.")
    if hidden % heads:
        raise ValueError(f"builtin:bert: hidden ({hidden}) must be divisible by heads ({heads}).")
    if task == "masked_lm" and num_classes not in (0, vocab_size):
        raise ValueError(f"builtin:bert: a masked_lm predicts vocab_size ({vocab_size}) classes but the data has "
                         f"{num_classes}; set vocab_size to the data's vocabulary size.")
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, max_position_embeddings=max(int(input_shape[0]), 2), pad_token_id=0,
        num_labels=max(int(num_classes), 1),
    )
    classes = {"sequence_classification": transformers.BertForSequenceClassification,
               "token_classification": transformers.BertForTokenClassification,
               "masked_lm": transformers.BertForMaskedLM, "base": transformers.BertModel}
    torch.manual_seed(seed)
    return classes[task](config)


def _lengths(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Real tokens per row (right padding); at least 1 so an empty row still has a state."""
    real = (input_ids != 0) if attention_mask is None else attention_mask.bool()
    return real.sum(1).clamp(min=1)  # (B,)


@MODELS.register("bilstm")
class BiLSTM(nn.Module):
    """Tang et al. 2019's student: word embeddings -> one bidirectional LSTM -> ReLU MLP -> logits.

    The sentence vector is the concatenated last states of both directions over the real tokens (the paper's
    single-sentence model, `pooling="last"`) or the max over time of the outputs (`pooling="max"`). Padding is
    packed away, so appending padding does not change the logits.

    Tang, Lu, Liu, Mou, Vechtomova & Lin, "Distilling Task-Specific Knowledge from BERT into Simple Neural
    Networks", 2019. https://arxiv.org/abs/1903.12136

    Args:
        input_shape: [seq_len] (filled in from the data; unused).
        num_classes: Output width (filled in from the data).
        vocab_size: Size of the tokenizer's vocabulary (required); id 0 is padding.
        embed_dim: Word-embedding width (the paper uses 300-d word2vec vectors).
        hidden: LSTM width per direction (paper: 150 on SST-2).
        mlp_hidden: Width of the ReLU layer before the classifier (paper: 200 to 400).
        pooling: "last" or "max".
        dropout: Dropout on the sentence vector.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, vocab_size: int | None = None,
                 embed_dim: int = 128, hidden: int = 150, mlp_hidden: int = 200, pooling: str = "last",
                 dropout: float = 0.1) -> None:
        super().__init__()
        if pooling not in ("last", "max"):
            raise ValueError(f"builtin:bilstm: pooling must be 'last' or 'max'; got {pooling!r}.")
        self.embed = nn.Embedding(_require_vocab("builtin:bilstm", vocab_size), embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.pooling = pooling
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, mlp_hidden), nn.ReLU(),
                                  nn.Linear(mlp_hidden, num_classes))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        lengths = _lengths(input_ids, attention_mask)
        packed = pack_padded_sequence(self.embed(input_ids), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        if self.pooling == "last":
            sentence = torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, 2H): forward at its last token, backward at 0
        else:
            out, _ = pad_packed_sequence(out, batch_first=True, padding_value=float("-inf"))  # (B, T_max, 2H)
            sentence = out.max(dim=1).values
        return self.head(sentence)  # (B, K)


@MODELS.register("textcnn")
class TextCNN(nn.Module):
    """Kim 2014's CNN for sentence classification: embeddings -> parallel 1-D convolutions (widths 3, 4, 5) ->
    ReLU -> max over time over the real tokens -> dropout -> linear.

    Windows start only at real tokens and padding embeddings are zeroed, so appending padding does not change
    the logits; a sentence shorter than a filter width still gets one (zero-padded) window.

    Kim, "Convolutional Neural Networks for Sentence Classification", EMNLP 2014. https://arxiv.org/abs/1408.5882

    Args:
        input_shape: [seq_len] (filled in from the data; unused).
        num_classes: Output width (filled in from the data).
        vocab_size: Size of the tokenizer's vocabulary (required); id 0 is padding.
        embed_dim: Word-embedding width (paper: 300).
        widths: Filter widths (paper: 3, 4, 5).
        filters: Feature maps per width (paper: 100).
        dropout: Dropout before the classifier (paper: 0.5).
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, vocab_size: int | None = None,
                 embed_dim: int = 128, widths: Sequence[int] = (3, 4, 5), filters: int = 100,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.embed = nn.Embedding(_require_vocab("builtin:textcnn", vocab_size), embed_dim, padding_idx=0)
        self.widths = tuple(int(w) for w in widths)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, w) for w in self.widths)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(filters * len(self.widths), num_classes))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        real = (input_ids != 0) if attention_mask is None else attention_mask.bool()  # (B, T)
        x = (self.embed(input_ids) * real.unsqueeze(-1)).transpose(1, 2)  # (B, E, T), padding zeroed
        starts = real.clone()
        starts[:, 0] = True  # an empty row still gets one window
        pooled = []
        for width, conv in zip(self.widths, self.convs, strict=True):
            feats = torch.relu(conv(nn.functional.pad(x, (0, width - 1))))  # (B, F, T): window t = tokens t..t+w-1
            pooled.append(feats.masked_fill(~starts.unsqueeze(1), float("-inf")).max(dim=2).values)  # (B, F)
        return self.head(torch.cat(pooled, dim=1))  # (B, K)


__all__ = ["BERT_TASKS", "BiLSTM", "TextCNN", "bert"]
