"""Task-specific KD for encoder heads (sequence and token classification) on tiny random-weight BERTs, and a
DistilBERT/TinyBERT-style student built from the teacher, through the public `kdforge.distill` API."""

import pytest
import torch

from kdforge.api import distill
from kdforge.losses import Outputs, Targets, WeightedSum
from kdforge.losses.kd import KDLoss
from kdforge.recipe import TrainConfig
from kdforge.train.module import DistillModule, OnlineTeacher
from tests.encoders_kit import INPUTS, bert_config, text_batch

transformers = pytest.importorskip("transformers")


def _task(teacher, n, seed):
    """A text-classification task defined by the teacher itself: its argmax on random token sequences."""
    batch = text_batch(n=n, t=8, seed=seed)
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    batch["labels"] = logits.argmax(-1)
    return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


def test_sequence_classification_kd_through_the_public_api():
    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(bert_config(layers=4, num_labels=3)).eval()
    with torch.no_grad():  # balance the teacher's classes: centre its logits on sample data, then sharpen them
        probe = text_batch(n=512, t=8, seed=9)
        logits = teacher(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
        teacher.classifier.bias -= logits.mean(0)
        teacher.classifier.weight /= logits.std(0).mean()
        teacher.classifier.bias /= logits.std(0).mean()
    torch.manual_seed(1)
    student = transformers.BertForSequenceClassification(bert_config(layers=1, num_labels=3))
    data = {"train": _task(teacher, 256, 0), "test": _task(teacher, 128, 1)}
    majority = torch.bincount(data["test"]["labels"], minlength=3).max().item() / 128
    student, result = distill(teacher, student, data, losses=[{"name": "kd", "temperature": 2.0}],
                              train=TrainConfig(epochs=6, batch_size=32, lr=3e-3, progress=False), inputs=INPUTS)
    with torch.no_grad():
        agree = (student.eval()(input_ids=data["test"]["input_ids"], attention_mask=data["test"]["attention_mask"])
                 .logits.argmax(-1) == data["test"]["labels"]).float().mean().item()
    assert result.student["accuracy"] == pytest.approx(agree, abs=1e-6)
    assert majority < 0.6 and agree > majority + 0.15


def test_token_classification_kd_masks_padding():
    """kd on (B, T, K) token logits: padded positions (mask False) contribute nothing."""
    torch.manual_seed(0)
    teacher = transformers.BertForTokenClassification(bert_config(layers=2, num_labels=4)).eval()
    torch.manual_seed(1)
    student = transformers.BertForTokenClassification(bert_config(layers=1, num_labels=4))
    batch = text_batch(n=16, t=6)
    module = DistillModule(student, WeightedSum({"kd": KDLoss(temperature=1.0)}, {"kd": 1.0}), INPUTS)
    source = OnlineTeacher(teacher, INPUTS)
    t_out = source(batch)
    s_out = module._student_outputs(batch)
    # independent: mean over real tokens of KL(p_t || p_s)
    keep = batch["mask"]
    p_t = torch.softmax(t_out.logits[keep], -1)
    ref = (p_t * (p_t.log() - torch.log_softmax(s_out.logits[keep], -1))).sum(-1).mean()
    got = KDLoss(temperature=1.0)(s_out, t_out, Targets(mask=keep))
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    changed = Outputs(logits=t_out.logits.clone())
    changed.logits[~keep] += 100.0  # teacher logits at padding do not matter
    assert KDLoss(temperature=1.0)(s_out, changed, Targets(mask=keep)).item() == pytest.approx(got.item(), rel=1e-5)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = module(batch, t_out)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_tinybert_two_stages_as_one_recipe_with_term_windows():
    """Stage 1: tinybert (embeddings, hidden states, attention scores) only; stage 2: kd on the logits only."""
    from kdforge.models.hf_student import student_from_teacher

    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(bert_config(layers=4, num_labels=3)).eval()
    student = student_from_teacher(teacher, "every_other")
    data = {"train": _task(teacher, 64, 0), "test": _task(teacher, 32, 1)}
    att = "bert.encoder.layer.{}.attention.self.{}"
    taps = {"student": {"se": "bert.embeddings", **{f"sh{i}": f"bert.encoder.layer.{i}" for i in range(2)},
                        **{f"s{r}{i}": att.format(i, name) for i in range(2) for r, name in (("q", "query"),
                                                                                            ("k", "key"))}},
            "teacher": {"te": "bert.embeddings", **{f"th{i}": f"bert.encoder.layer.{i}" for i in range(4)},
                        **{f"t{r}{i}": att.format(i, name) for i in range(4) for r, name in (("q", "query"),
                                                                                            ("k", "key"))}}}
    stage1 = {"name": "tinybert", "stop_step": 4, "heads": 2, "projector": "none",
              "hidden_pairs": {"map": "uniform", "student": ["se", "sh0", "sh1"], "teacher": ["te", "th1", "th3"]},
              "attention_pairs": {"map": "uniform", "student": [["sq0", "sk0"], ["sq1", "sk1"]],
                                  "teacher": [[f"tq{i}", f"tk{i}"] for i in range(4)]}}
    stage2 = {"name": "kd", "start_step": 4, "temperature": 1.0}
    _, result = distill(teacher, student, data, losses=[stage1, stage2], taps=taps, inputs=INPUTS,
                        train=TrainConfig(epochs=2, batch_size=16, lr=1e-3, progress=False))
    assert result.steps == 8
    assert 0.0 <= result.student["accuracy"] <= 1.0
