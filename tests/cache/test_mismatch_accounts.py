"""What a store built for another teacher or other data says when opened: a served teacher's mismatch names
the server entries that differ (it has no weights), other data names `recipe.data`."""

import pytest
import torch
from torch import nn

from kdforge.app.cache import open_store
from kdforge.cache.hashing import teacher_fingerprint
from kdforge.cache.store import CacheError, CacheSettings, CacheStore, fingerprint_splits, write_cache
from kdforge.data.tensors import TensorData
from kdforge.llm.served import ServedSettings, ServedTeacher
from kdforge.recipe import recipe_from_dict

URL = "http://127.0.0.1:9"


def splits(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: TensorData({"x": torch.randn(rows, 4, generator=g)}) for name, rows in (("train", 12), ("test", 4))}


def local_teacher(shift=0.0):
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    with torch.no_grad():
        net.bias.add_(shift)
    return net


def served(**args):
    return ServedTeacher(ServedSettings(url=URL, vocab_size=3, top_logprobs=3, model="tiny-teacher", **args))


def build(tmp_path, teacher_print, server=None):
    """A store of a local net's logits, recorded as built for `teacher_print` (and `server`, as a served
    teacher's build records it): the check reads only the manifest."""
    extra = {"teacher": {"params": 15, **({"server": server} if server else {})}}
    write_cache(local_teacher(), splits(), tmp_path / "cache", CacheSettings(),
                {"teacher": teacher_print, "data": fingerprint_splits(splits(), ["x"])}, ["x"], batch_size=4,
                extra=extra)
    return tmp_path / "cache"


def recipe():
    return recipe_from_dict({"name": "t", "data": {"source": "sklearn:iris"},
                             "teacher": {"model": "builtin:mlp", "cache": "cache"},
                             "student": {"model": "builtin:mlp"}, "losses": [{"name": "kd"}]})


def test_a_served_teacher_is_told_which_of_its_server_entries_differ_not_its_weights(tmp_path):
    teacher = served()
    path = build(tmp_path, teacher.fingerprint(), teacher.settings.identity())
    open_store(recipe(), None, served(), path)  # the same server, model and N: up to date
    with pytest.raises(CacheError, match=r"^recipe.teacher.cache: the teacher cache in .* was built for another "
                                         r"teacher \(another served model: model 'tiny-teacher' in the cache, "
                                         r"'other' here, top_logprobs 3 in the cache, 2 here\)\. Rebuild") as err:
        open_store(recipe(), None, ServedTeacher(ServedSettings(url=URL, vocab_size=3, top_logprobs=2,
                                                                model="other")), path)
    assert "weights" not in str(err.value)
    # a record that agrees with a fingerprint that does not: the account says what the fingerprint covers
    forged = build(tmp_path / "forged", "0" * 64, teacher.settings.identity())
    with pytest.raises(CacheError, match=r"another teacher \(another served model: its url, model, protocol, "
                                         r"top_logprobs or vocab_size differ\)"):
        open_store(recipe(), None, served(), forged)


def test_a_served_teacher_and_a_store_of_weights_say_which_side_is_which(tmp_path):
    path = build(tmp_path, teacher_fingerprint(local_teacher()))
    with pytest.raises(CacheError, match=r"another teacher \(not this served model: the cache records no server\)"):
        open_store(recipe(), None, served(), path)
    served_path = build(tmp_path / "s", served().fingerprint(), served().settings.identity())
    with pytest.raises(CacheError, match=rf"another teacher \(the served model at '{URL}', not this one\)"):
        open_store(recipe(), None, local_teacher(), served_path)


def test_another_local_teacher_is_told_its_weights_differ(tmp_path):
    path = build(tmp_path, teacher_fingerprint(local_teacher()))
    open_store(recipe(), None, local_teacher(), path)
    with pytest.raises(CacheError, match=r"^recipe.teacher.cache: .* another teacher \(its weights differ\)"):
        open_store(recipe(), None, local_teacher(shift=0.5), path)


def test_other_data_names_the_data_field(tmp_path):
    store = CacheStore(build(tmp_path, teacher_fingerprint(local_teacher())))
    store.check({"data": fingerprint_splits(splits(), ["x"])})
    with pytest.raises(CacheError, match=r"^recipe.data: the teacher cache in .* was built for other data \(sample "
                                         r"contents or ids differ\)\. Rebuild it with `kdforge cache RECIPE "
                                         r"--overwrite`"):
        store.check({"data": fingerprint_splits(splits(seed=1), ["x"])})
