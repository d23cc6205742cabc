"""text:lm_file with a teacher tokenizer: the user's text records become paired cross-tokenizer rows (two tokenizer
folders written here, a Unigram student and a WordPiece teacher), a span_kl recipe runs on them from the CLI, and
what pairing cannot honour (chats, packing, a missing teacher tokenizer) is refused naming the field."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from kdforge.cli import main
from kdforge.data import load_data
from kdforge.data.corpus import stdlib_sentences
from kdforge.data.lm_tokenizers import train_lm_tokenizer
from kdforge.errors import KDForgeError, RecipeError
from kdforge.lm.align import NO_SPAN
from kdforge.lm.cross_data import check_alignment_rows, is_paired
from kdforge.recipe import DataSpec, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "cross_tokenizer" / "lm_file_wordpiece_from_unigram.yaml"
SIZES = {"student": ("unigram", 280), "teacher": ("wordpiece", 260)}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder with data/docs.jsonl and tokenizers/{student,teacher} (save_pretrained folders), as the shipped
    recipe expects; the special tokens sit at ids other than kdforge's 0-3 on the teacher's side."""
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("xtok_file")
    texts = stdlib_sentences(limit=160, seed=0)
    texts[3] = "Ünïcode wörds and  double  spaces, café."  # bytes beyond ASCII, whitespace one side drops
    for side, (kind, size) in SIZES.items():
        trained = train_lm_tokenizer(texts, kind, size)
        tok = PreTrainedTokenizerFast(tokenizer_object=_specials_last(trained) if side == "teacher" else trained,
                                      pad_token="[PAD]",
                                      bos_token="[BOS]", eos_token="[EOS]", unk_token="[UNK]")
        tok.save_pretrained(root / "tokenizers" / side)
    (root / "data").mkdir()
    (root / "data" / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return root


def _specials_last(tokenizer):
    """A WordPiece tokenizer with its special tokens moved from ids 0-3 to the end of the vocabulary."""
    from tokenizers import Tokenizer

    state = json.loads(tokenizer.to_str())
    order = sorted(state["model"]["vocab"], key=state["model"]["vocab"].get)
    order = order[4:] + order[:4]
    state["model"]["vocab"] = {token: i for i, token in enumerate(order)}
    for added in state["added_tokens"]:
        added["id"] = state["model"]["vocab"][added["content"]]
    return Tokenizer.from_str(json.dumps(state))


def _spec(files: Path, **args) -> DataSpec:
    base = {"path": str(files / "data" / "docs.jsonl"), "tokenizer": f"hf:{files / 'tokenizers' / 'student'}",
            "teacher_tokenizer": f"hf:{files / 'tokenizers' / 'teacher'}", "seq_len": 24, "teacher_seq_len": 28}
    return DataSpec(source="text:lm_file", args={**base, **args})


def _covered(offsets: list[tuple[int, int]], spans: list[int], k: int, text: str) -> str:
    """The text of span k on one side (the characters its tokens cover), whitespace removed."""
    ranges = [o for o, s in zip(offsets, spans, strict=True) if s == k]
    return "".join(text[min(a for a, _ in ranges):max(b for _, b in ranges)].split())


def test_text_records_are_paired_span_by_span(files):
    from transformers import AutoTokenizer

    data = load_data(_spec(files), where="recipe.data")
    texts = [json.loads(line)["text"] for line in (files / "data" / "docs.jsonl").read_text().splitlines()]
    student = AutoTokenizer.from_pretrained(files / "tokenizers" / "student")
    teacher = AutoTokenizer.from_pretrained(files / "tokenizers" / "teacher")
    rows = data.teacher_train
    assert is_paired(rows) and data.student_train is rows and len(rows) + len(data.val) + len(data.test) == 160
    assert data.vocab_map.shape == (len(teacher),) and int((data.vocab_map >= 0).sum()) > 10
    t = rows.tensors
    check_alignment_rows(t["student_span"], t["teacher_span"])  # as many spans on both sides, every row
    assert int(t["teacher_input_ids"].max()) < len(teacher) and int(t["input_ids"].max()) < len(student)
    assert teacher.bos_token_id == len(teacher) - 3 and student.bos_token_id == 1  # specials placed apart
    whole = 0
    for row in range(len(rows)):
        text = texts[int(t["index"][row])]
        s_enc = student.backend_tokenizer.encode(text, add_special_tokens=False)
        t_enc = teacher.backend_tokenizer.encode(text, add_special_tokens=False)
        s_ids, t_ids = t["input_ids"][row], t["teacher_input_ids"][row]
        assert int(s_ids[0]) == student.bos_token_id and int(t_ids[0]) == teacher.bos_token_id
        s_len, t_len = int(t["attention_mask"][row].sum()), int(t["teacher_attention_mask"][row].sum())
        ends = int(s_ids[s_len - 1]) == student.eos_token_id
        assert ends == (int(t_ids[t_len - 1]) == teacher.eos_token_id)  # both rows end their text, or neither
        s_body, t_body = s_ids[1:s_len - ends].tolist(), t_ids[1:t_len - ends].tolist()
        assert s_body == s_enc.ids[:len(s_body)] and t_body == t_enc.ids[:len(t_body)]  # each side's own tokens
        if ends:
            whole += 1
            assert s_body == s_enc.ids and t_body == t_enc.ids
            assert int(t["text_bytes"][row]) == len(text.encode("utf-8"))
        s_span = t["student_span"][row, 1:1 + len(s_body)].tolist()
        t_span = t["teacher_span"][row, 1:1 + len(t_body)].tolist()
        for k in sorted(set(s_span) - {NO_SPAN}):  # each span covers the same characters on both sides
            assert _covered(s_enc.offsets[:len(s_body)], s_span, k, text) == \
                _covered(t_enc.offsets[:len(t_body)], t_span, k, text), (row, k)
        # labels: the next token of each side's own row, trained up to the last real token
        assert torch.equal(t["teacher_labels"][row, :t_len - 1], t_ids[1:t_len])
        assert int(t["teacher_mask"][row].sum()) == t_len - 1 and int(t["mask"][row].sum()) == s_len - 1
    assert 0 < whole < len(rows)  # short texts fit whole, long ones are cut at a shared span end


@pytest.mark.parametrize("cache", [False, True], ids=["online", "cached"])
def test_shipped_recipe_distils_from_files_with_span_kl(files, tmp_path, capsys, cache):
    store = [f"teacher.cache={tmp_path / 'store'}"] if cache else []
    overrides = [*store, "data.args.limit=120", "teacher.args.layers=1", "teacher.args.hidden=32",
                 f"teacher.args.vocab_size={SIZES['teacher'][1]}", "student.args.hidden=32",
                 f"student.args.vocab_size={SIZES['student'][1]}", "teacher.train.max_steps=3", "train.max_steps=3",
                 "train.batch_size=8", "teacher.train.batch_size=8"]
    recipe = yaml.safe_load(RECIPE.read_text())
    path = files / "recipe.yaml"  # beside data/ and tokenizers/: the recipe's relative paths resolve there
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as info:
        main(["distill", str(path), "--out", str(tmp_path / "run"), "--quiet",
              *(arg for value in overrides for arg in ("--set", value))])
    assert info.value.code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    for who in ("teacher", "student", "scratch"):
        assert 0 < report[who]["bits_per_byte"] < 20
    mapped = report["methods"]["0"]["span_kl"]
    assert 0 < mapped["mapped_teacher_mass"] < 1 and mapped["positions"] > 0
    assert mapped["teacher_vocab"] == SIZES["teacher"][1]
    if cache:  # the teacher ran once on its own tokens into the store, which the student read
        manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
        assert manifest["inputs"] == {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"}
        assert manifest["vocab_size"] == SIZES["teacher"][1]


def test_recipe_keys_load_as_written():
    recipe = load_recipe(RECIPE)
    assert recipe.data.args["teacher_tokenizer"] == "hf:tokenizers/teacher"
    assert recipe.teacher.inputs == {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"}


def test_a_missing_teacher_tokenizer_exits_2_naming_the_field(files, tmp_path, capsys):
    spec = yaml.safe_load(RECIPE.read_text())
    path = files / "missing.yaml"
    spec["data"]["args"]["teacher_tokenizer"] = "hf:tokenizers/nowhere"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SystemExit) as info:
        main(["distill", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert "recipe.data.args.teacher_tokenizer" in err and "nowhere" in err


def test_what_pairing_cannot_honour_is_refused(files, tmp_path):
    with pytest.raises(RecipeError, match=r"recipe\.data\.args\.packing: .*teacher_tokenizer"):
        load_data(_spec(files, packing=True), where="recipe.data")
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "hello"}]}) + "\n"
                             for _ in range(10)))
    for extra in ({}, {"assistant_only": False}):
        with pytest.raises(RecipeError, match=r"recipe\.data\.args\.teacher_tokenizer: record 1 is a chat") as info:
            load_data(_spec(files, path=str(chats), **extra), where="recipe.data")
        assert "\n" not in str(info.value)
    with pytest.raises(RecipeError, match=r"recipe\.data\.args\.text_field: record 1 of 'docs.jsonl' has no "
                                          r"field 'body'"):
        load_data(_spec(files, text_field="body"), where="recipe.data")
    with pytest.raises(RecipeError, match=r"recipe\.data\.args\.assistant_only"):
        load_data(_spec(files, assistant_only=True), where="recipe.data")
    with pytest.raises(KDForgeError, match=r"recipe\.data\.args\.teacher_seq_len"):
        load_data(_spec(files, teacher_seq_len=2), where="recipe.data")
    with pytest.raises(RecipeError, match=r"recipe\.data\.args\.teacher_seq_len only .*teacher_tokenizer too"):
        load_data(_spec(files, teacher_tokenizer=None), where="recipe.data")
    with pytest.raises(RecipeError, match=r"recipe\.data\.args\.teacher_tokenizer: unknown tokenizer"):
        load_data(_spec(files, teacher_tokenizer="wordpiece"), where="recipe.data")
