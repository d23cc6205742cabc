"""The one table of which cache setting each format reads (`kdforge.cache.formats.FORMAT_SETTINGS`): the store's
settings record and fingerprint, the recipe checks and docs/cache.md all follow it, and stores built before it
existed keep their settings fingerprint."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from kdforge.app.cache import build_settings
from kdforge.cache.formats import FORMAT_KEYS, FORMAT_SETTINGS, FORMATS, formats_reading
from kdforge.cache.store import CacheSettings, settings_fingerprint
from kdforge.errors import RecipeError
from kdforge.recipe import CacheSpec, recipe_from_dict

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cache.md"

# settings fingerprints as the stores built so far recorded them: a change here makes every existing store stale
PINNED = [
    (CacheSettings(), ["x"], None, "2e43e72c8c6cf8fd5664ad18752c7c5e8cf93a27bdb9ecbf57538ed7c1ccec6f"),
    (CacheSettings(logits="topk", k=8, dtype="float16"), ["input_ids", "attention_mask"], None,
     "49070b8b220ce613b5ec46196253920a082333bc18cf549c4987d3bc67a92577"),
    (CacheSettings(logits="full", k=5, features=("h", "a")), ["x"], {"a": "net.0", "h": "net.2"},
     "e5a65718160ce1848ecf9369d6b61ec2d101ff50771c16928ee908b772a0386c"),
    (CacheSettings(logits="sampled", dtype="float16", samples=20, proposal_temperature=1.5, seed=3, indices="plain"),
     ["input_ids"], None, "ea2cc817344b2bb3078e3b82af2530dcf0dfa2e4d44e698148c7fc2b2485f078"),
    (CacheSettings(logits="topk_tail", dtype="float16", k=32, values="uint8"), {"input_ids": "teacher_input_ids"},
     None, "49d7d86d4f1cfcc9a2a1cdf748ec1192776dee8850ac2106e7d6281aa1382f0e"),
]


@pytest.mark.parametrize(("settings", "inputs", "taps", "expected"), PINNED, ids=lambda v: getattr(v, "logits", None))
def test_settings_fingerprints_of_existing_stores_do_not_change(settings, inputs, taps, expected):
    assert settings_fingerprint(settings, inputs, taps) == expected


def test_a_store_records_exactly_the_settings_its_format_reads():
    common = {"logits", "dtype", "features"}
    fields = {f.name for f in dataclasses.fields(CacheSettings)}
    assert fields == common | set(FORMAT_KEYS)  # every setting is either recorded by all or in the table
    assert FORMATS == tuple(FORMAT_SETTINGS)
    for logits in FORMATS:
        assert set(CacheSettings(logits=logits).as_dict()) == common | set(FORMAT_SETTINGS[logits])
    # a setting the format does not read leaves the fingerprint alone
    assert settings_fingerprint(CacheSettings(logits="topk", seed=7), ["x"]) == settings_fingerprint(
        CacheSettings(logits="topk"), ["x"])
    assert settings_fingerprint(CacheSettings(logits="sampled", seed=7), ["x"]) != settings_fingerprint(
        CacheSettings(logits="sampled"), ["x"])


def test_the_docs_settings_table_names_the_formats_each_setting_applies_to():
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]* \| ([^|]*) \|$", DOCS.read_text(), flags=re.M))
    for key in FORMAT_KEYS:
        named = re.match(r"((?:`\w+`(?:, )?)+):", rows[key])
        assert named, f"docs/cache.md: the `{key}` row should start with the formats it applies to"
        assert tuple(re.findall(r"`(\w+)`", named.group(1))) == formats_reading(key), key


def test_the_recipe_schema_describes_the_same_table():
    fields = CacheSpec.model_fields
    assert typing.get_args(typing.get_args(fields["logits"].annotation)[0]) == FORMATS
    for key in FORMAT_KEYS:
        named = re.match(r"((?:\w+(?:, )?)+):", fields[key].description)
        assert named and tuple(named.group(1).split(", ")) == formats_reading(key), key


def recipe(**cache):
    return recipe_from_dict({
        "name": "t", "data": {"source": "sklearn:iris"},
        "teacher": {"model": "builtin:mlp", "cache": {"dir": "c", **cache}},
        "student": {"model": "builtin:mlp"}, "losses": [{"name": "kd"}]})


@pytest.mark.parametrize("key", [k for k in FORMAT_KEYS if k != "k"])
def test_a_stated_setting_another_format_reads_is_refused_naming_the_formats_that_read_it(key):
    value = {"samples": 4, "proposal_temperature": 2.0, "seed": 1, "values": "uint8", "indices": "plain"}[key]
    for logits in FORMATS:
        spec = CacheSpec(dir="c", logits=logits, **{key: value})
        if logits in formats_reading(key):
            assert getattr(build_settings(spec, recipe()), key) == value
        else:
            with pytest.raises(RecipeError, match=rf"^recipe.teacher.cache.{key}: does not apply to logits: {logits} "
                                                  rf"\(it is a setting of {', '.join(formats_reading(key))}\)"):
                build_settings(spec, recipe())
