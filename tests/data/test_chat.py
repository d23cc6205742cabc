"""Causal-LM rows from the user's files (`text:lm_file`): chat templates, assistant-only labels, packing and
per-batch padding."""

import copy
import importlib.util
import json

import pytest
import torch

from kdforge.data import load_data
from kdforge.data.chat import bpe_chat_tokenizer, encode_chat, encode_text, rows_of
from kdforge.data.corpus import stdlib_sentences
from kdforge.data.tensors import PaddedRows, iterate_batches, sequential_batches, trim_padding
from kdforge.errors import RecipeError
from kdforge.lm.tokenizers import CHAT_TEMPLATE
from kdforge.recipe import DataSpec
from kdforge.types import IGNORE_INDEX, TensorData

CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What does it return?"},
                {"role": "assistant", "content": "The value."},
                {"role": "user", "content": "And then?"},
                {"role": "assistant", "content": "Nothing else."}]
# ChatML-like, written here, without generation markers: the replies are found by rendering prefixes
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_chat_tokenizer(stdlib_sentences(limit=200), 300)


def with_template(tokenizer, template):
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other


def trained_text(tokenizer, example):
    ids, flags = example
    return tokenizer.decode([i for i, f in zip(ids, flags, strict=True) if f])


def test_generation_markers_train_only_the_assistant_replies_with_one_bos(tokenizer):
    ids, flags = encode_chat(tokenizer, CONVERSATION)
    assert trained_text(tokenizer, (ids, flags)) == "The value.[EOS]Nothing else.[EOS]"
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)


def test_prefix_rendering_agrees_with_the_markers_and_handles_a_template_without_them(tokenizer):
    plain = with_template(tokenizer, CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    assert encode_chat(plain, CONVERSATION) == encode_chat(tokenizer, CONVERSATION)
    chatml = encode_chat(with_template(tokenizer, CHATML), CONVERSATION)
    assert trained_text(tokenizer, chatml) == "The value.<|im_end|>\nNothing else.<|im_end|>\n"
    assert not any(chatml[1][:5])


def test_a_template_that_does_not_render_by_prefixes_is_refused(tokenizer):
    counting = with_template(tokenizer, "{{ messages|length }}" + CHATML)
    with pytest.raises(RecipeError, match="generation"):
        encode_chat(counting, CONVERSATION, where="recipe.data")
    ids, flags = encode_chat(counting, CONVERSATION, assistant_only=False)
    assert not flags[0] and all(flags[1:])


def test_text_is_framed_by_one_bos_and_one_eos(tokenizer):
    from tokenizers import processors

    adding = copy.deepcopy(tokenizer)  # a tokenizer that adds BOS/EOS itself
    adding.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 1), ("[EOS]", 2)])
    for tok in (tokenizer, adding):
        for text in ("Return the value.", "[BOS]Return the value.[EOS]"):
            ids, flags = encode_text(tok, text)
            assert ids[0] == 1 and ids[-1] == 2 and ids.count(1) == 1 and ids.count(2) == 1
            assert flags == [False] + [True] * (len(ids) - 1)


def test_rows_label_the_next_token_only_where_it_is_trained(tokenizer):
    examples = [encode_chat(tokenizer, CONVERSATION), encode_text(tokenizer, "Short text.")]
    rows = rows_of(examples, 200, packing=False, pad_id=tokenizer.pad_token_id, name="t")
    assert isinstance(rows, PaddedRows)
    for r, (ids, flags) in enumerate(examples):
        expected = torch.full((200,), IGNORE_INDEX)
        for t in range(len(ids) - 1):
            if flags[t + 1]:
                expected[t] = ids[t + 1]
        assert torch.equal(rows.tensors["labels"][r], expected)
        assert torch.equal(rows.tensors["mask"][r], expected != IGNORE_INDEX)
        assert rows.tensors["attention_mask"][r].sum() == len(ids)


def test_packing_fills_rows_and_keeps_every_trained_token_not_at_a_row_start(tokenizer):
    examples = [encode_chat(tokenizer, CONVERSATION)] * 3 + [encode_text(tokenizer, "Short text.")]
    rows = rows_of(examples, 32, packing=True, pad_id=tokenizer.pad_token_id, name="t")
    stream = [i for ids, _ in examples for i in ids]
    flags = [f for _, fl in examples for f in fl]
    starts = [s for s in range(0, len(stream), 32) if any(flags[s + 1:s + 32])]  # blocks with a trained token
    assert type(rows) is TensorData and rows.tensors["input_ids"].shape[1] == 32 and len(rows) == len(starts) >= 3
    lengths = rows.tensors["attention_mask"].sum(1)
    for row, n, s in zip(rows.tensors["input_ids"], lengths, starts, strict=True):
        assert row[:n].tolist() == stream[s:s + 32]
    assert int(rows.tensors["mask"].sum()) == sum(sum(flags[s + 1:s + 32]) for s in starts)


def test_training_batches_are_padded_to_their_longest_row_only(tokenizer):
    texts = ["A.", "A longer sentence with more words in it.", "Mid length text here."]
    rows = rows_of([encode_text(tokenizer, t) for t in texts], 64, packing=False, pad_id=0, name="t")
    lengths = rows.tensors["attention_mask"].sum(1)
    for batch in [next(iterate_batches(rows, 2, seed=s)) for s in range(4)]:
        longest = int(lengths[batch["index"]].max())
        assert {k: v.shape[1] for k, v in batch.items() if v.dim() == 2} == dict.fromkeys(
            ("input_ids", "attention_mask", "labels", "mask"), longest)
    assert next(sequential_batches(rows, 2))["input_ids"].shape[1] == 64  # evaluation keeps one width
    plain = TensorData(dict(rows.tensors))
    assert next(iterate_batches(plain, 2, seed=0))["input_ids"].shape[1] == 64  # other data: unchanged
    assert isinstance(rows.subset(torch.tensor([0, 1])), PaddedRows)
    other = rows.with_tensor("teacher_input_ids", rows.tensors["input_ids"].clone())  # not a row key: kept whole
    batch = next(iterate_batches(other, 2, seed=0))
    assert batch["teacher_input_ids"].shape[1] == 64 > batch["input_ids"].shape[1]


def test_trimming_the_padding_leaves_the_loss_unchanged(tokenizer):
    from kdforge.llm.data import tiny_causal_lm

    torch.manual_seed(0)
    rows = rows_of([encode_text(tokenizer, t) for t in ("A.", "Two words here.")], 40, packing=False, pad_id=0,
                   name="t")
    model = tiny_causal_lm("llama", layers=1, hidden=16, heads=2, vocab_size=300).double()
    losses = []
    for batch in (rows[slice(0, 2)], trim_padding(rows[slice(0, 2)])):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten()))
    assert batch["input_ids"].shape[1] < 40
    assert losses[0].item() == pytest.approx(losses[1].item(), abs=1e-10)


def conversations(n=40):
    sentences = stdlib_sentences(limit=2 * n, seed=1)
    return [{"messages": [{"role": "user", "content": sentences[2 * i]},
                          {"role": "assistant", "content": sentences[2 * i + 1]}]} for i in range(n)]


def lm_spec(path, **args):
    return DataSpec(source="text:lm_file", args={"path": str(path), "tokenizer": "bpe", "vocab_size": 300,
                                                 "seq_len": 96, **args}, test_size=0.2, val_size=0.1)


def test_lm_file_reads_chat_json_lines_with_assistant_only_labels(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations()))
    bundle = load_data(lm_spec("chat.jsonl", seq_len=512), base_dir=tmp_path, where="recipe.data")
    assert isinstance(bundle.student_train, PaddedRows)
    assert len(bundle.test) == 8 and len(bundle.val) == 4 and len(bundle.student_train) == 28
    tok = bundle.tokenizer.backend
    replies = {c["messages"][1]["content"] + "[EOS]" for c in conversations()}
    for data in (bundle.student_train, bundle.test):
        for labels in data.tensors["labels"]:
            assert tok.decode(labels[labels != IGNORE_INDEX].tolist()) in replies
    ids = torch.cat([bundle.student_train.tensors["index"], bundle.val.tensors["index"], bundle.test.tensors["index"]])
    assert len(set(ids.tolist())) == 40


def test_lm_file_reads_text_csv_and_packs(tmp_path):
    sentences = stdlib_sentences(limit=30, seed=2)
    (tmp_path / "docs.txt").write_text("\n\n".join(sentences))
    (tmp_path / "docs.csv").write_text("body\n" + "\n".join(json.dumps(s) for s in sentences))
    text = load_data(lm_spec(tmp_path / "docs.txt", packing=True, seq_len=32), where="recipe.data")
    assert (text.student_train.tensors["attention_mask"].sum(1)[:-1] == 32).all()
    assert text.student_train.tensors["mask"].float().mean() > 0.9  # text: every token but row starts
    csv = load_data(lm_spec(tmp_path / "docs.csv", text_field="body"), where="recipe.data")
    assert len(csv.student_train) + len(csv.val) + len(csv.test) == 30


@pytest.mark.parametrize(("args", "match"), [
    ({"format": "xml"}, "recipe.data.args.format"),
    ({"format": "text"}, "recipe.data.args.format: record 1 has no 'text'"),
    ({"format": "chat", "messages_field": "turns"}, "messages_field"),
    ({"tokenizer": "wordpiece"}, "recipe.data.args.tokenizer"),
    ({"path": "missing.jsonl"}, "recipe.data.args.path"),
])
def test_lm_file_errors_name_the_argument(tmp_path, args, match):
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(c) + "\n" for c in conversations(10)))
    spec = lm_spec("chat.jsonl")
    spec.args.update(args)
    with pytest.raises(RecipeError, match=match):
        load_data(spec, base_dir=tmp_path, where="recipe.data")


def test_plain_text_with_assistant_only_is_refused(tmp_path):
    (tmp_path / "docs.txt").write_text("One line.\nAnother line.\n" * 5)
    with pytest.raises(RecipeError, match="assistant_only: record 1 is plain text"):
        load_data(lm_spec(tmp_path / "docs.txt", assistant_only=True), where="recipe.data")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets is installed")
def test_a_datasets_folder_without_datasets_says_how_to_install_it(tmp_path):
    (tmp_path / "saved").mkdir()
    with pytest.raises(RecipeError, match=r"pip install 'kdforge\[llm\]'"):
        load_data(lm_spec(tmp_path / "saved"), where="recipe.data")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="needs datasets (pip install 'kdforge[llm]')")
def test_a_datasets_folder_and_parquet_are_read(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list(conversations(20))
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset.to_parquet(str(tmp_path / "chat.parquet"))
    for path in (tmp_path / "saved", tmp_path / "chat.parquet"):
        bundle = load_data(lm_spec(path), where="recipe.data")
        assert len(bundle.student_train) + len(bundle.val) + len(bundle.test) == 20
