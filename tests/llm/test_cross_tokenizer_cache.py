"""The teacher cache for a cross-tokenizer teacher (inputs {forward argument: batch key}): built once on the
teacher's own tokens, keyed by sample id and a content hash that covers the teacher's inputs and the rows'
alignment (the student's input_ids, student_span, teacher_span), so the student trained from it is the online
one, and rows re-tokenized or re-aligned are refused in one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from kdforge.app.cache import open_store
from kdforge.app.run import distill_student
from kdforge.app.teacher import run_teacher
from kdforge.cache.hashing import content_keys, row_hashes
from kdforge.cache.store import CacheError, CacheStore, fingerprint_splits
from kdforge.cache.teacher import CachedTeacher, ReplayTeacher
from kdforge.cli import main
from kdforge.data import load_data
from kdforge.errors import RecipeError
from kdforge.models.forward import call_model, logits_of
from kdforge.recipe import load_recipe, recipe_from_dict
from kdforge.types import TensorData

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "cross_tokenizer" / "stdlib_unigram_from_bpe.yaml"
SMALL = ["data.args.limit=200", "data.args.vocab_size=300", "data.args.teacher_vocab_size=280",
         "data.args.seq_len=24", "teacher.args.layers=1", "teacher.args.hidden=32", "teacher.args.vocab_size=280",
         "student.args.hidden=32", "student.args.vocab_size=300", "teacher.train.max_steps=3", "train.max_steps=4",
         "train.batch_size=8", "teacher.train.batch_size=8", "eval.batch_size=16"]
MAPPING = {"input_ids": "teacher_input_ids", "attention_mask": "teacher_attention_mask"}


def with_teacher(recipe, **teacher):
    """`recipe` with keys of its teacher block replaced (None removes one)."""
    data = recipe.model_dump(mode="json")
    data["teacher"] = {k: v for k, v in {**data["teacher"], **teacher}.items() if v is not None}
    return recipe_from_dict(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(recipe reading the saved teacher, its data): the shipped recipe at a test budget, teacher trained once."""
    root = tmp_path_factory.mktemp("xtok")
    recipe = load_recipe(RECIPE, overrides=SMALL)
    data = load_data(recipe.data)
    run_teacher(recipe, data, root, resume=False)  # trains on its own tokens, saves root/teacher
    return with_teacher(recipe, path=str(root / "teacher"), model=None, args={}, train=None), data


def cached(recipe, directory: Path, **settings):
    return with_teacher(recipe, cache={"dir": str(directory), **settings})


def shifted(data: TensorData, key: str, row: int = 0) -> TensorData:
    """`data` with one id of `key` in `row` changed (a planted misalignment or re-tokenization; a student token
    changes its label too, so the rows stay next-token rows)."""
    tensor = data.tensors[key].clone()
    col = int((tensor[row] >= 0).nonzero()[1])
    tensor[row, col] += 1
    if key == "input_ids":
        labels = data.tensors["labels"].clone()
        labels[row, col - 1] = tensor[row, col]
        data = data.with_tensor("labels", labels)
    return data.with_tensor(key, tensor)


def test_the_content_hash_covers_the_alignment_and_plain_hashes_are_unchanged():
    ids = (torch.arange(60).reshape(6, 10) * 37) % 500
    plain = TensorData({"input_ids": ids, "attention_mask": torch.ones(6, 10, dtype=torch.long)})
    x = TensorData({"x": torch.arange(18, dtype=torch.float32).reshape(6, 3) / 7})
    # the values of kdforge before renamed keys could be cached: existing stores keep their fingerprints
    assert fingerprint_splits({"train": plain}, ["input_ids", "attention_mask"]) == \
        "1afd171b51663eafce26042caf0dbd17ff43dbaa8ac98fadea4aefdafba084e2"
    assert fingerprint_splits({"train": x}, ["x"]) == \
        "8d8dc20ff0007e51304b5e878f67fb4c0bb1e016976581a20983b7fbb23b2d1c"
    assert row_hashes(plain.tensors, ["input_ids", "attention_mask"])[0] == 4051061937323778122

    paired = {"teacher_input_ids": ids + 1, "teacher_attention_mask": torch.ones(6, 10, dtype=torch.long),
              "input_ids": ids, "student_span": ids % 7, "teacher_span": ids % 5, "labels": ids}
    keys = content_keys(MAPPING, paired)
    assert keys == ["teacher_attention_mask", "teacher_input_ids", "input_ids", "student_span", "teacher_span"]
    assert content_keys(dict(reversed(MAPPING.items())), paired) == keys  # the mapping's order changes nothing
    assert content_keys(["input_ids"], paired) == ["input_ids"]
    assert content_keys({"x": "image"}, {"image": ids}) == ["image"]  # renamed keys without paired rows
    base = row_hashes(paired, MAPPING)
    for key in ("teacher_input_ids", "input_ids", "student_span", "teacher_span"):
        changed = dict(paired, **{key: paired[key].clone()})
        changed[key][2, 3] += 1
        moved = row_hashes(changed, MAPPING)
        assert moved[2] != base[2] and torch.equal(moved[torch.arange(6) != 2], base[torch.arange(6) != 2]), key
    assert torch.equal(row_hashes(dict(paired, labels=ids * 0), MAPPING), base)  # labels are not inputs


def test_the_cached_student_is_the_online_one(trained, tmp_path, monkeypatch):
    recipe, data = trained
    online_teacher = run_teacher(recipe, data, tmp_path / "unused", resume=False)
    torch.manual_seed(123)
    online = distill_student(recipe, 0, data, online_teacher, None, tmp_path / "online" / "student", False)

    calls = {"n": 0}
    original = CachedTeacher.__call__

    def counting(self, batch):
        calls["n"] += 1
        return original(self, batch)

    monkeypatch.setattr(CachedTeacher, "__call__", counting)
    with_cache = cached(recipe, tmp_path / "cache")
    teacher = run_teacher(with_cache, data, tmp_path / "unused", resume=False)  # builds the store
    store = CacheStore(tmp_path / "cache")
    assert store.manifest["inputs"] == MAPPING and store.manifest["splits"]["train"] == len(data.teacher_train)
    # the teacher ran on its own tokens: its logits cover its own vocabulary at its own positions
    assert tuple(store.split("train").arrays["logits"].shape[1:]) == (24, 280)
    torch.manual_seed(321)  # the student's seed is the recipe's, whatever the global state
    student = distill_student(with_cache, 0, data, teacher, None, tmp_path / "cached" / "student", False)
    assert calls["n"] >= recipe.train.max_steps  # every training step read the store
    a, b = online.state_dict(), student.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_rows_aligned_otherwise_are_refused(trained, tmp_path):
    recipe, data = trained
    with_cache = cached(recipe, tmp_path / "cache")
    teacher = run_teacher(with_cache, data, tmp_path / "unused", resume=False)
    open_store(with_cache, data, teacher)  # its own rows pass

    # a planted shift of one span id, or one student token changed, in one training row: refused when opened ...
    for key in ("student_span", "teacher_span", "input_ids"):
        bad = dataclasses.replace(data, teacher_train=shifted(data.teacher_train, key))
        with pytest.raises(CacheError, match=r"^recipe.data: the teacher cache in .* other cross-tokenizer rows .*"
                                             r"kdforge cache RECIPE --overwrite") as err:
            open_store(with_cache, bad, teacher)
        assert "\n" not in str(err.value)

    # ... and by the cache itself on the first batch that holds it (a store read from Python, unchecked data)
    source = CachedTeacher(CacheStore(tmp_path / "cache"), MAPPING)
    batch = data.teacher_train[torch.arange(8)]
    out = source(batch)  # the stored logits are the teacher's on these rows
    with torch.no_grad():
        online = logits_of(call_model(teacher.eval(), batch, MAPPING))
    torch.testing.assert_close(out.logits, online, rtol=1e-4, atol=1e-4)
    source.recheck()
    planted = shifted(data.teacher_train, "student_span", row=3)[torch.arange(8)]
    with pytest.raises(CacheError, match=r"cross-tokenizer rows of samples \[.*\] \(.*student_span.*\) differ .*"
                                         r"alignment changed .*--overwrite"):
        source(planted)
    with pytest.raises(CacheError, match="renamed keys"):
        ReplayTeacher(CacheStore(tmp_path / "cache"), MAPPING)

    # another student tokenizer: the cache's text record says so first
    other = load_recipe(RECIPE, overrides=[*SMALL, "data.args.vocab_size=290", "student.args.vocab_size=290"])
    other_data = load_data(other.data)
    with pytest.raises(CacheError, match=r"^recipe.data: the teacher cache .* another tokenizer .*--overwrite"):
        open_store(with_cache, other_data, teacher)


def test_a_sparse_cache_is_refused_for_the_cross_tokenizer_losses(trained, tmp_path):
    recipe, data = trained
    with_cache = cached(recipe, tmp_path / "cache", logits="topk", k=8)
    teacher = run_teacher(with_cache, data, tmp_path / "unused", resume=False)
    with pytest.raises(RecipeError, match=r"recipe.losses \(span_kl\): the teacher cache holds top-k logits, and "
                                          r"the cross-tokenizer losses .*teacher.cache.logits: full"):
        distill_student(with_cache, 0, data, teacher, None, tmp_path / "s" / "student", False)


def test_kdforge_cache_builds_it_from_the_cli(trained, tmp_path, capsys):
    recipe, _ = trained
    spec = recipe.model_dump(mode="json")
    spec["teacher"]["cache"] = "cache"
    # each command loads the data anew and trains the recipe's Unigram student tokenizer again: the same one every
    # time (test_a_unigram_tokenizer_has_one_fingerprint_every_training), so the store built by one is the next's
    assert spec["data"]["args"]["tokenizer"] == "unigram"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))

    def cli(*args):
        with pytest.raises(SystemExit) as info:
            main(["cache", str(path), "--quiet", *args])
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    code, out, _ = cli()
    assert code == 0 and "teacher cache built" in out
    assert CacheStore(tmp_path / "cache").manifest["inputs"] == MAPPING
    code, out, err = cli()
    assert code == 0 and "teacher cache up to date" in out, err
    code, _, err = cli("--set", "data.args.vocab_size=290")  # another student tokenizer
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "another tokenizer" in err and "--overwrite" in err and "cache" in err


def test_recipe_keys_for_a_cached_cross_tokenizer_teacher():
    recipe = load_recipe(RECIPE, overrides=["teacher.cache=store"])  # no longer refused
    assert recipe.teacher.inputs == MAPPING and recipe.teacher.cache.dir == "store"
    with pytest.raises(RecipeError, match="renamed keys .* needs its model beside 'cache'"):
        with_teacher(recipe, model=None, args={}, train=None)
    with pytest.raises(RecipeError, match="served teacher .* renamed keys"):
        with_teacher(recipe, model="served:http://localhost:1", train=None)


def test_a_wordpiece_tokenizer_is_the_same_every_training_and_unigram_ids_follow_the_text():
    """The trainers number equal vocabularies differently each time; the ids must not depend on that."""
    from kdforge.cache.hashing import tokenizer_fingerprint
    from kdforge.data.lm import stdlib_sentences
    from kdforge.data.lm_tokenizers import train_lm_tokenizer

    texts = stdlib_sentences(limit=200, seed=0)
    assert len({tokenizer_fingerprint(train_lm_tokenizer(texts, "wordpiece", 300)) for _ in range(3)}) == 1
    vocabularies = [train_lm_tokenizer(texts, "unigram", 300).get_vocab() for _ in range(3)]
    assert all(v == vocabularies[0] for v in vocabularies)


def test_a_unigram_tokenizer_has_one_fingerprint_every_training():
    """The Unigram trainer's scores differ from one training to the next (hash-order sums, and the characters it
    brings back after pruning scored in hash-set order); the trained tokenizer is made canonical, so a cache built
    by one process for such a student is the next one's too."""
    from kdforge.cache.hashing import tokenizer_fingerprint
    from kdforge.data.lm import stdlib_sentences
    from kdforge.data.lm_tokenizers import train_lm_tokenizer

    texts = stdlib_sentences(limit=200, seed=0)
    assert len({tokenizer_fingerprint(train_lm_tokenizer(texts, "unigram", 300)) for _ in range(3)}) == 1


def test_a_unigram_tokenizer_with_other_scores_has_another_fingerprint():
    import json

    from tokenizers import Tokenizer

    from kdforge.cache.hashing import tokenizer_fingerprint
    from kdforge.data.lm import stdlib_sentences
    from kdforge.data.lm_tokenizers import UNIGRAM_SCORE_DECIMALS, train_lm_tokenizer

    trained = train_lm_tokenizer(stdlib_sentences(limit=200, seed=0), "unigram", 300)
    state = json.loads(trained.to_str())
    pieces = state["model"]["vocab"]
    assert all(round(score, UNIGRAM_SCORE_DECIMALS) == score for _, score in pieces)  # the stated precision
    text, score = pieces[10]
    for change in (1e-3, 10 ** -UNIGRAM_SCORE_DECIMALS):  # the smallest difference the precision keeps counts
        pieces[10] = [text, score - change]
        other = Tokenizer.from_str(json.dumps(state))
        assert tokenizer_fingerprint(other) != tokenizer_fingerprint(trained)
