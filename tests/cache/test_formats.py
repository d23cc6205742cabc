"""The sparse cache formats (kdforge.cache.formats): encodings, round trips through the store, old stores."""

import json
import math

import pytest
import torch
from tests.cache.test_store import Teacher, build, cached, reference, splits

from kdforge.cache import formats
from kdforge.cache.hashing import row_hashes
from kdforge.cache.store import CacheError, CacheSettings, CacheStore
from kdforge.cache.teacher import ReplayTeacher
from kdforge.losses.sampled import Sampled, TopKTail


@pytest.mark.parametrize("vocab", [2, 5, 512, 32000, 70000])
def test_bit_packing_round_trips_at_ceil_log2_bits(vocab):
    g = torch.Generator().manual_seed(vocab)
    ids = torch.randint(0, vocab, (3, 4, 7), generator=g)
    ids[0, 0, 0] = vocab - 1
    packed = formats.pack_bits(ids, formats.index_bits(vocab))
    assert packed.dtype == torch.uint8 and packed.shape[-1] == math.ceil(7 * math.ceil(math.log2(vocab)) / 8)
    assert torch.equal(formats.unpack_bits(packed, 7, formats.index_bits(vocab)), ids)


@pytest.mark.parametrize(("code", "step"), [("float16", None), ("uint16", 32.0 / 65535), ("uint8", 16.0 / 255)])
def test_log_probability_codes_round_trip_within_half_a_step(code, step):
    logp = torch.log_softmax(torch.randn(40, 30) * 3, -1)
    back = formats.decode_logp(formats.encode_logp(logp, code), code)
    if step is None:
        torch.testing.assert_close(back, logp, rtol=1e-3, atol=1e-3)
    else:
        inside = logp >= -formats.LOGP_RANGE[code]
        assert float((back - logp)[inside].abs().max()) <= step / 2 + 1e-6
        assert bool((back[~inside] == -formats.LOGP_RANGE[code]).all())  # below the range: its floor


def test_sampled_draws_are_a_function_of_the_row_not_of_the_batch():
    logits = torch.randn(6, 4, 50) * 2
    keys = torch.arange(100, 106)
    settings = CacheSettings(logits="sampled", samples=12)
    whole = formats.encode(logits, settings, keys)
    halves = [formats.encode(logits[i:i + 3], settings, keys[i:i + 3]) for i in (0, 3)]
    for stem in whole:
        assert torch.equal(whole[stem], torch.cat([h[stem] for h in halves]))
    signal = formats.decode(whole, settings, 50)
    assert bool((signal.counts.sum(-1) == 12).all())
    other = formats.encode(logits, CacheSettings(logits="sampled", samples=12, seed=1), keys)
    assert not torch.equal(other["samples_ids"], whole["samples_ids"])  # the seed matters


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_the_stored_sampled_signal_still_gives_an_unbiased_kl_and_gradient(tau):
    """What the loss reads back (packed ids and counts, float16 entropy and log-ratios), averaged over many
    independent builds (seeds), equals the dense forward KL and its gradient s - p: the encoding adds no bias
    beyond the float16 rounding of the stored entropy (a constant shift of the value, none of the gradient)."""
    from kdforge.losses.base import Outputs, Targets
    from kdforge.losses.token_kd import TokenKDLoss

    g = torch.Generator().manual_seed(0)
    vocab = 23
    teacher = torch.randn(2, 3, vocab, generator=g, dtype=torch.float64) * 2
    student = torch.randn(2, 3, vocab, generator=g, dtype=torch.float64)
    p = torch.softmax(teacher, -1)
    s = torch.softmax(student, -1)
    want = (p * (p.log() - s.log())).sum(-1).mean()
    want_grad = (s - p) / 6  # d/dz of the mean over 6 positions of KL(p || softmax(z))
    loss, keys, draws = TokenKDLoss(chunk_size=4), torch.arange(7, 9), 500
    values, grads = [], []
    for seed in range(draws):
        settings = CacheSettings(logits="sampled", samples=12, proposal_temperature=tau, seed=seed)
        signal = formats.decode(formats.encode(teacher.float(), settings, keys), settings, vocab)
        z = student.clone().requires_grad_(True)
        value = loss(Outputs(logits=z), Outputs(logits=signal), Targets())
        (grad,) = torch.autograd.grad(value, z)
        values.append(float(value.detach()))
        grads.append(grad)
    values_t, grads_t = torch.tensor(values, dtype=torch.float64), torch.stack(grads)
    rounding = float((p * p.log()).sum(-1).abs().max()) * 2**-11  # half a float16 step of the entropy
    assert abs(float(values_t.mean()) - float(want)) < 5 * float(values_t.std()) / draws**0.5 + rounding
    # per component, the exact variance of one 12-draw estimate (importance weights w = p/q under q)
    q = torch.softmax(teacher / tau, -1)
    second = (p**2 / q).sum(-1, keepdim=True) * s**2 - 2 * s * p**2 / q + p**2 / q
    var = (second - (s - p) ** 2) / 12 / 36
    assert bool(((grads_t.mean(0) - want_grad).abs() <= 5 * (var / draws).sqrt() + 1e-6).all())
    assert float(values_t.std()) > 1e-3  # not trivially exact


@pytest.mark.parametrize("settings", [
    CacheSettings(logits="sampled", samples=12),
    CacheSettings(logits="sampled", samples=5, proposal_temperature=2.0, indices="plain"),
    CacheSettings(logits="topk_tail", k=3, values="uint8"),
    CacheSettings(logits="topk_tail", k=3, values="uint16", indices="plain"),
    CacheSettings(logits="topk_tail", k=8, values="float16"),
], ids=lambda s: "-".join(str(v) for v in s.as_dict().values() if not isinstance(v, list)))
def test_every_sparse_format_round_trips_through_the_store(tmp_path, settings):
    teacher, data = Teacher(), splits()
    path, status, _ = build(tmp_path, teacher, data, settings)
    assert status == "built"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["settings"]["logits"] == settings.logits
    for stem in formats.stems(settings):
        assert f"train/{stem}.npy" in manifest["files"] and manifest["files"][f"train/{stem}.npy"]["sha256"]
    source = cached(path, sparse=True)
    ids = torch.tensor([7, 0, 49, 3])
    signal, _ = source.read(ids, data["train"][ids])
    logits = reference(teacher, data["train"])[ids]
    keys = row_hashes(data["train"][ids], ["x"])
    want = formats.decode(formats.encode(logits, settings, keys), settings, 5)
    assert type(signal) is type(want)
    for name in ("indices", "counts", "log_ratio", "entropy", "log_probs", "log_tail"):
        if getattr(want, name, None) is not None:
            torch.testing.assert_close(getattr(signal, name), getattr(want, name))
    logp = torch.log_softmax(logits, -1)
    if isinstance(signal, TopKTail):  # ids exact, log-probabilities within their code's step, tail mass exact
        k = min(settings.k, 5)
        assert torch.equal(signal.indices, logp.topk(k, -1).indices)
        tol = {"uint8": 0.04, "uint16": 3e-4, "float16": 2e-3}[settings.values]
        torch.testing.assert_close(signal.log_probs, logp.topk(k, -1).values, atol=tol, rtol=0)
        if k < 5:
            tail = torch.log1p(-logp.topk(k, -1).values.exp().sum(-1))
            torch.testing.assert_close(signal.log_tail, tail, atol=2e-3, rtol=1e-3)
    else:
        assert isinstance(signal, Sampled) and bool((signal.counts.sum(-1) == settings.samples).all())
        h = -(logp.exp() * logp).sum(-1)
        torch.testing.assert_close(signal.entropy, h, atol=2e-3, rtol=1e-3)
    # the payload on disk is what bytes_per_position says (headers aside)
    payload = sum(manifest["files"][f"train/{stem}.npy"]["bytes"] - 128 for stem in formats.stems(settings))
    assert payload == 50 * formats.bytes_per_position(settings, 5)


def test_a_sampled_store_refuses_to_stand_in_for_dense_logits(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, _ = build(tmp_path, teacher, data, CacheSettings(logits="sampled"))
    with pytest.raises(CacheError, match="sampled tokens"):
        cached(path)(data["train"][torch.arange(4)])  # sparse=False wants dense logits
    replay = ReplayTeacher(CacheStore(path), ["x"])
    with pytest.raises(CacheError, match="teacher model beside cache"):
        replay(data["test"].tensors["x"][:3])
    # a top-k + tail store rebuilds dense logits (tail spread evenly) where asked
    path, _, _ = build(tmp_path, teacher, data, CacheSettings(logits="topk_tail", k=5, values="float16"), name="tt")
    dense = cached(path)(data["train"][torch.arange(4)]).logits
    torch.testing.assert_close(torch.log_softmax(dense, -1), torch.log_softmax(reference(teacher, data["train"])[:4],
                                                                                 -1), atol=2e-3, rtol=0)


def test_a_version_1_store_still_loads_with_its_settings_fingerprint(tmp_path):
    teacher, data = Teacher(), splits()
    path, _, fingerprints = build(tmp_path, teacher, data, CacheSettings(logits="topk", k=3, dtype="float16"))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["settings"] == {"logits": "topk", "k": 3, "dtype": "float16", "features": []}  # as in v1
    manifest["version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    store = CacheStore(path)
    assert store.settings.logits == "topk" and store.settings.k == 3
    # rebuilding with the same settings finds it up to date: the settings fingerprint did not change
    assert build(tmp_path, teacher, data, CacheSettings(logits="topk", k=3, dtype="float16"))[1] == "up to date"


@pytest.mark.parametrize(("field", "value", "words"), [
    ("logits", "dense", "logits"), ("samples", 0, "samples"), ("values", "int4", "values"),
    ("indices", "zstd", "indices"), ("proposal_temperature", 0.0, "proposal_temperature")])
def test_bad_settings_name_the_field(field, value, words):
    with pytest.raises(CacheError, match=f"recipe.teacher.cache.{words}"):
        CacheSettings(**{field: value})


@pytest.mark.slow
def test_a_recipe_trains_from_a_sampled_cache_and_preflight_refuses_what_it_cannot_read(tmp_path):
    from tests.cache.test_tokenizer_check import lm_recipe

    from kdforge.app.run import run_recipe
    from kdforge.errors import RecipeError
    from kdforge.recipe import recipe_from_dict

    spec = lm_recipe(300)
    run_recipe(recipe_from_dict(spec, base_dir=tmp_path), out_dir=tmp_path / "run")  # builds, then trains
    assert (tmp_path / "run" / "seed-0" / "student" / "model.safetensors").is_file()
    for i, (loss, words) in enumerate((({"name": "kd", "temperature": 4.0}, "temperature 1"),
                        ({"name": "token_kd", "divergence": "reverse_kl"}, "forward_kl"),
                        ({"name": "logit_mse"}, "reads the teacher's dense logits"))):
        with pytest.raises(RecipeError, match=f"recipe.losses .*holds sampled tokens, and .*{words}"):
            run_recipe(recipe_from_dict({**spec, "losses": [loss]}, base_dir=tmp_path), out_dir=tmp_path / f"no{i}")
