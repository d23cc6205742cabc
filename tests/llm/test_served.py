"""The served teacher (kdforge.llm.served) against a protocol-conformant local server (tests/llm/served_server.py):
alignment, batching and concurrency, retries, resume after an interruption, the tokenizer check, the cache."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdforge.cache.store import CacheSettings, CacheStore, fingerprint_splits, partial_dir, write_cache
from kdforge.data.lm import encode, train_tokenizer
from kdforge.llm.data import tiny_causal_lm
from kdforge.llm.served import ServedError, ServedSettings, ServedTeacher
from kdforge.losses.sparse import reconstruct_log_probs
from tests.llm.served_server import TeacherServer

VOCAB, SEQ, N = 300, 16, 5
INPUTS = ["input_ids", "attention_mask"]


SUBJECTS = ["The parser", "A thread", "The socket", "Each worker", "The archive", "This codec", "The queue",
            "A generator", "The scheduler", "Every handler", "The decoder", "A timer"]
VERBS = ["reads the next block from", "writes a header into", "closes the stream behind", "returns the first line of",
         "raises an error for", "decodes the bytes of"]
OBJECTS = ["the buffer.", "a compressed file.", "the open connection.", "each request.", "the current frame."]


@pytest.fixture(scope="module")
def corpus():
    sentences = [f"{s} {v} {o}" for i, s in enumerate(SUBJECTS) for j, v in enumerate(VERBS)
                 for o in OBJECTS[(i + j) % 5:(i + j) % 5 + 1]]
    tokenizer = train_tokenizer(sentences, VOCAB)
    return SimpleNamespace(tokenizer=tokenizer, data=encode(sentences[:24], tokenizer, SEQ), sentences=sentences)


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("gpt2", layers=1, hidden=32, heads=2, vocab_size=VOCAB, seed=0).eval()


def teacher(server: TeacherServer, tokenizer=None, **overrides) -> ServedTeacher:
    values = {"url": server.url, "vocab_size": VOCAB, "top_logprobs": N, "special_ids": (0, 1, 2),
              "prompts_per_request": 3, "concurrency": 2, "retries": 2, "backoff": 0.0, **overrides}
    return ServedTeacher(ServedSettings(**values), tokenizer, sleep=lambda s: None)


def dense_top(model: nn.Module, ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's own top-N log-probabilities at positions 0..length-2 (kdforge's alignment), float64."""
    with torch.no_grad():
        lp = F.log_softmax(model(input_ids=ids[None, :length]).logits[0].double(), -1)
    return lp[:length - 1].topk(N, dim=-1)


class Counter(nn.Module):
    """A planted teacher: after token t it predicts t + 1 with probability ~0.9, whatever came before."""

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, VOCAB)
        logits.scatter_(-1, ((input_ids + 1) % VOCAB).unsqueeze(-1), 7.0)
        return SimpleNamespace(logits=logits)


def test_position_t_gets_the_servers_entry_t_plus_1_planted():
    ids = torch.tensor([[10, 11, 12, 13, 14, 0, 0], [40, 41, 42, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with TeacherServer(Counter()) as server:
        out = teacher(server, special_ids=())(ids, mask)
    labels = ids[:, 1:]
    # position t predicts labels[t] = input_ids[t + 1]: the planted next token is the top entry there
    assert torch.equal(out.indices[0, :4, 0], labels[0, :4]) and torch.equal(out.indices[1, :2, 0], labels[1, :2])
    p_top = math.exp(7.0) / (math.exp(7.0) + VOCAB - 1)
    assert out.values[0, :4, 0].double().exp().sub(p_top).abs().max() < 1e-5
    # the last real position and the padding: a uniform stand-in (log-sum-exp 0, no loss reads it)
    assert torch.allclose(out.values[0, 4:], torch.full((3, N), -math.log(VOCAB)))
    assert torch.equal(out.logsumexp, torch.zeros(2, 7))


def test_log_probs_match_the_teacher_itself_and_requests_are_batched_and_concurrent(corpus, model):
    data = corpus.data
    ids, mask = data.tensors["input_ids"][:7], data.tensors["attention_mask"][:7]
    with TeacherServer(model, corpus.tokenizer, delay=0.3) as server:
        served = teacher(server, corpus.tokenizer)
        out = served(ids, mask)
    assert served.tokenizer_check == "checked"
    assert server.attempts == 3 and server.max_inflight == 2  # 7 prompts, 3 per request, 2 at a time
    for b in range(7):
        length = int(mask[b].sum())
        values, indices = dense_top(model, ids[b], length)
        assert torch.equal(out.indices[b, :length - 1], indices)
        assert torch.allclose(out.values[b, :length - 1].double(), values, atol=1e-5)
    # the rebuilt distribution (temperature 1, uniform tail) keeps the top-N exactly
    rebuilt = reconstruct_log_probs(out, 1.0, "uniform")
    assert torch.allclose(rebuilt.gather(-1, out.indices), out.values, atol=1e-5)


def test_sglang_protocol_gives_the_same_signal(corpus, model):
    ids, mask = corpus.data.tensors["input_ids"][:4], corpus.data.tensors["attention_mask"][:4]
    with TeacherServer(model, corpus.tokenizer) as server:
        vllm = teacher(server)(ids, mask)
        sglang = teacher(server, protocol="sglang")(ids, mask)
    assert torch.equal(vllm.indices, sglang.indices) and torch.equal(vllm.values, sglang.values)


def test_dropped_connections_and_5xx_are_retried_with_exponential_backoff(corpus, model):
    ids, mask = corpus.data.tensors["input_ids"][:3], corpus.data.tensors["attention_mask"][:3]
    waits: list[float] = []
    with TeacherServer(model, corpus.tokenizer, drop_first=2, fail_first=1) as server:
        settings = ServedSettings(url=server.url, vocab_size=VOCAB, top_logprobs=N, special_ids=(0, 1, 2),
                                  retries=3, backoff=0.25)
        out = ServedTeacher(settings, sleep=waits.append)(ids, mask)
        assert server.attempts == 4 and server.answered == 1
    assert waits == [0.25, 0.5, 1.0]
    with TeacherServer(model, corpus.tokenizer) as server:
        clean = teacher(server)(ids, mask)
    assert torch.equal(out.values, clean.values) and torch.equal(out.indices, clean.indices)


def test_a_server_that_stays_down_fails_with_one_clear_error(corpus, model):
    ids, mask = corpus.data.tensors["input_ids"][:2], corpus.data.tensors["attention_mask"][:2]
    with TeacherServer(model, corpus.tokenizer, die_after=0) as server:
        with pytest.raises(ServedError, match=r"no answer after 3 attempts .*retries / timeout; rerun to resume"):
            teacher(server)(ids, mask)
        assert server.attempts == 3


def test_a_refused_request_is_not_retried_and_names_the_setting(corpus, model):
    ids, mask = corpus.data.tensors["input_ids"][:2], corpus.data.tensors["attention_mask"][:2]
    with TeacherServer(model, corpus.tokenizer, max_logprobs=4) as server:
        with pytest.raises(ServedError, match=r"HTTP 400.*greater than max allowed.*recipe.teacher.args"):
            teacher(server)(ids, mask)
        assert server.attempts == 1


def test_a_server_without_the_endpoint_names_the_url_and_protocol(corpus, model):
    ids, mask = corpus.data.tensors["input_ids"][:2], corpus.data.tensors["attention_mask"][:2]
    with TeacherServer(model, corpus.tokenizer) as server:
        with pytest.raises(ServedError, match=r"/v1 has no /v1/completions \(HTTP 404\).*without /v1"):
            teacher(server, url=server.url + "/v1")(ids, mask)


def test_another_tokenizer_on_the_server_is_refused(corpus, model):
    other = train_tokenizer(corpus.sentences[::-1][:30], VOCAB)  # same size, other merges
    ids, mask = corpus.data.tensors["input_ids"][:4], corpus.data.tensors["attention_mask"][:4]
    with TeacherServer(model, other) as server:
        with pytest.raises(ServedError, match=r"recipe.teacher.args: the server's tokenizer is not the data's: .* "
                                              r"at token \d+ for the data but"):
            teacher(server, corpus.tokenizer)(ids, mask)
        assert server.attempts == 0  # refused before any log-probabilities were asked for
    with TeacherServer(model, corpus.tokenizer) as server:  # the same tokenizer passes, both ways
        assert teacher(server, corpus.tokenizer)(ids, mask) is not None
        served = teacher(server)
        served(ids, mask)
        assert served.tokenizer_check == "round trip"
    with TeacherServer(model, None) as server:  # no /tokenize: the echoed ids alone
        served = teacher(server, corpus.tokenizer)
        served(ids, mask)
        assert served.tokenizer_check == "unavailable"


@pytest.mark.parametrize("protocol", ["vllm", "sglang"])
def test_a_server_that_reads_other_ids_than_those_sent_is_refused(corpus, model, protocol):
    ids, mask = corpus.data.tensors["input_ids"][:2], corpus.data.tensors["attention_mask"][:2]
    with TeacherServer(model, corpus.tokenizer, rewrite=lambda row: [row[0]] + [(t + 1) % VOCAB for t in row[1:]]
                       ) as server:
        with pytest.raises(ServedError, match=f"the server echoed token .* at position 1 where {int(ids[0, 1])} "
                                              "was sent"):
            teacher(server, protocol=protocol, check_rows=0)(ids, mask)


def test_token_ids_outside_the_vocabulary_are_refused(corpus, model):
    ids, mask = corpus.data.tensors["input_ids"][:2], corpus.data.tensors["attention_mask"][:2]
    with TeacherServer(model, corpus.tokenizer) as server:
        with pytest.raises(ServedError, match="outside the vocabulary"):
            teacher(server, vocab_size=VOCAB - 200, top_logprobs=N, check_rows=0)(ids.clamp(max=99), mask)


def test_settings_are_checked():
    with pytest.raises(ServedError, match=r"recipe.teacher.model: served:'localhost:8000' is not an http"):
        ServedSettings(url="localhost:8000", vocab_size=10)
    with pytest.raises(ServedError, match=r"recipe.teacher.args.protocol"):
        ServedSettings(url="http://h:1", vocab_size=10, protocol="tgi")
    with pytest.raises(ServedError, match=r"recipe.teacher.args.concurrency"):
        ServedSettings(url="http://h:1", vocab_size=10, concurrency=0)


# ----------------------------------------------------------------------------------------- the cache build


def build(served: ServedTeacher, data, directory, **kw) -> str:
    fingerprints = {"teacher": served.fingerprint(), "data": fingerprint_splits({"train": data}, INPUTS)}
    return write_cache(served, {"train": data}, directory, CacheSettings(logits="topk", k=N, dtype="float32"),
                       fingerprints, INPUTS, batch_size=8, chunk_rows=8, **kw)


def test_a_killed_build_resumes_without_asking_for_finished_chunks(corpus, model, tmp_path):
    data = corpus.data  # 24 rows: 3 chunks of 8, one request of 8 prompts each
    with TeacherServer(model, corpus.tokenizer, die_after=3) as server:  # the probe, chunks 1 and 2, then gone
        port = server._httpd.server_address[1]
        with pytest.raises(ServedError, match="no answer after"):
            build(teacher(server, prompts_per_request=8), data, tmp_path / "cache")
    assert partial_dir(tmp_path / "cache").is_dir() and not (tmp_path / "cache").exists()
    rows = [tuple(r[:int(n)].tolist()) for r, n in zip(data.tensors["input_ids"],
                                                       data.tensors["attention_mask"].sum(1), strict=True)]
    with TeacherServer(model, corpus.tokenizer, port=port) as server:  # restarted at the same address
        assert build(teacher(server, prompts_per_request=8), data, tmp_path / "cache") == "resumed"
        assert server.served == rows[16:]  # only the unfinished chunk
    with TeacherServer(model, corpus.tokenizer) as server:
        assert build(teacher(server, prompts_per_request=8), data, tmp_path / "whole") == "built"
    resumed, whole = CacheStore(tmp_path / "cache").split("train"), CacheStore(tmp_path / "whole").split("train")
    for stem in ("topk_values", "topk_indices", "logsumexp"):
        assert np.array_equal(resumed.arrays[stem].numpy(), whole.arrays[stem].numpy()), stem
    assert resumed.arrays["topk_indices"].dtype == torch.int16


def test_the_cache_holds_the_servers_top_k_in_kdforges_alignment(corpus, model, tmp_path):
    data = corpus.data
    with TeacherServer(model, corpus.tokenizer) as server:
        served = teacher(server, corpus.tokenizer)
        build(served, data, tmp_path / "cache")
    assert served.tokenizer_check == "checked" and served._rows_checked == 4  # past the one-row probe
    store = CacheStore(tmp_path / "cache")
    split = store.split("train")
    assert store.vocab_size == VOCAB and store.settings.logits == "topk" and store.settings.k == N
    for b in (0, 5, 23):
        length = int(data.tensors["attention_mask"][b].sum())
        values, indices = dense_top(model, data.tensors["input_ids"][b], length)
        assert torch.equal(split.arrays["topk_indices"][b, :length - 1].long(), indices)
        assert torch.allclose(split.arrays["topk_values"][b, :length - 1].double(), values, atol=1e-5)


def test_a_teacher_giving_top_k_needs_a_topk_store_of_its_k(corpus, model, tmp_path):
    data = corpus.data
    with TeacherServer(model, corpus.tokenizer) as server:
        served = teacher(server)
        fingerprints = {"teacher": served.fingerprint(), "data": fingerprint_splits({"train": data}, INPUTS)}
        with pytest.raises(ValueError, match=f"logits: topk, k: {N}"):
            write_cache(served, {"train": data}, tmp_path / "c", CacheSettings(logits="topk", k=N + 1), fingerprints,
                        INPUTS)


_BUILD = f"""
import sys, torch
from kdforge.cache.store import CacheSettings, fingerprint_splits, write_cache
from kdforge.llm.served import ServedSettings, ServedTeacher
from kdforge.types import TensorData
torch.set_num_threads(1)
data = TensorData(torch.load(sys.argv[2], weights_only=True))
served = ServedTeacher(ServedSettings(url=sys.argv[1], vocab_size={VOCAB}, top_logprobs={N},
                                      check_rows=0, prompts_per_request=4))
inputs = ["input_ids", "attention_mask"]
write_cache(served, {{"train": data}}, sys.argv[3], CacheSettings(logits="topk", k={N}, dtype="float32"),
            {{"teacher": served.fingerprint(), "data": fingerprint_splits({{"train": data}}, inputs)}}, inputs,
            batch_size=4, chunk_rows=4)
"""


@pytest.mark.slow
def test_a_build_killed_with_sigkill_resumes_from_its_last_chunk(corpus, model, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from kdforge.types import TensorData

    data = TensorData({k: v for k, v in corpus.data.tensors.items()})
    torch.save(data.tensors, tmp_path / "data.pt")
    shard = partial_dir(tmp_path / "cache") / "progress.shard-0.json"  # the chunks a build has recorded

    def recorded() -> set[int]:
        try:
            return set(json.loads(shard.read_text())["done"]["train"])
        except (OSError, ValueError, KeyError):
            return set()

    with TeacherServer(model, corpus.tokenizer, delay=0.2) as server:
        child = subprocess.Popen([sys.executable, "-c", _BUILD, server.url, str(tmp_path / "data.pt"),
                                  str(tmp_path / "cache")], env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 300
        while len(recorded()) < 2 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        done = recorded()
        assert 2 <= len(done) < 6 and not (tmp_path / "cache").exists()
        while server.inflight:  # the killed build's last request is still being answered
            time.sleep(0.02)
        server.served.clear()
        served = ServedTeacher(ServedSettings(url=server.url, vocab_size=VOCAB, top_logprobs=N, check_rows=0,
                                              prompts_per_request=4))
        fingerprints = {"teacher": served.fingerprint(), "data": fingerprint_splits({"train": data}, INPUTS)}
        assert write_cache(served, {"train": data}, tmp_path / "cache", CacheSettings(logits="topk", k=N,
                           dtype="float32"), fingerprints, INPUTS, batch_size=4, chunk_rows=4) == "resumed"
    lengths = data.tensors["attention_mask"].sum(1)
    rows = [tuple(r[:int(n)].tolist()) for r, n in zip(data.tensors["input_ids"], lengths, strict=True)]
    assert server.served == [row for i, row in enumerate(rows) if i // 4 * 4 not in done]  # finished: not again
    with TeacherServer(model, corpus.tokenizer) as server:
        assert build(teacher(server, check_rows=0), data, tmp_path / "whole") == "built"
    resumed, whole = CacheStore(tmp_path / "cache").split("train"), CacheStore(tmp_path / "whole").split("train")
    for stem in ("topk_values", "topk_indices", "logsumexp"):
        assert np.array_equal(resumed.arrays[stem].numpy(), whole.arrays[stem].numpy()), stem
