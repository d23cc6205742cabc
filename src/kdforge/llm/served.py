"""A served teacher: an inference server's prompt log-probabilities, read as the top-k teacher signal.

A teacher too large for the training machine often already runs behind an inference server. kdforge sends it
the data's token ids as prompts and asks for the top-N log-probabilities at every prompt position; the answer
is stored in the teacher cache's top-k format (`kdforge.cache`), which students then train from. A server
answers over HTTP, so it builds the cache and never runs inside a training step.

Protocols (`protocol=`), both sending token ids, never text, so the server does not re-tokenize:

* ``"vllm"``: ``POST /v1/completions`` with ``prompt`` a list of token-id lists (one request, several prompts),
  ``max_tokens: 1`` and vLLM's ``prompt_logprobs: N`` extension. Each choice (``index`` = prompt) carries
  ``prompt_logprobs``: ``None`` for position 0, then one ``{token id: {"logprob", "rank", "decoded_token"}}``
  per position holding the N most likely tokens and the prompt's own token. vLLM answers this, and so does any
  server that implements the same extension.
* ``"sglang"``: SGLang's native ``POST /generate`` with ``input_ids`` (a list of lists), ``return_logprob``,
  ``logprob_start_len: 0`` and ``top_logprobs_num: N``; ``meta_info.input_top_logprobs`` holds one list of
  ``[logprob, token id, text]`` per position (``None`` at position 0) and ``input_token_logprobs`` echoes the ids.

Alignment: the server's entry i is log p(token_i | tokens < i). kdforge's position t predicts
``labels[t] = input_ids[t + 1]`` (`kdforge.lm.rows`), so position t takes the server's entry t + 1, and the last
real position (nothing follows) and padding get a uniform stand-in (their labels are -100: no loss reads them).

Temperature: the server's log-probabilities are the model's distribution at temperature 1 (requests say
``temperature: 1.0``; vLLM computes prompt log-probs from the raw logits). They are stored as logits whose
log-sum-exp is 0; the loss applies the recipe's temperature, once (`kdforge.losses.sparse`). Every answer is
checked: the echoed ids must be the ids sent, the top-N must be normalised (their total probability <= 1), and
every id must lie in the vocabulary.

Tokenizer: before the first request, a few rows are decoded with the data's tokenizer and the text encoded by
the server's ``/tokenize`` endpoint (vLLM's and SGLang's); ids that differ stop the build. Without the data's
tokenizer the rows' ids make a round trip through the server's ``/detokenize`` and ``/tokenize`` instead (a
weaker check); a server without those endpoints is checked by the echoed ids alone.

Requests run `concurrency` at a time (a thread pool), `prompts_per_request` prompts each, and are retried with
exponential backoff on a dropped connection, a timeout, a 5xx or 429 answer (`retries` times, then one error
naming the server and the fix). Resuming an interrupted build is the cache's: finished chunks are kept.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import torch
from torch import Tensor, nn

from kdforge.errors import KDForgeError
from kdforge.losses.sparse import TopK
from kdforge.prefixes import SERVED_PREFIX

logger = logging.getLogger("kdforge")

PROTOCOLS = ("vllm", "sglang")
_NORMALISED = 1e-3  # log of the top-N's total probability may exceed 0 by this much (float rounding), no more
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class ServedError(KDForgeError, ValueError):
    """The teacher server cannot be reached, refuses a request, or answers something that is not the teacher."""


@dataclass(frozen=True)
class ServedSettings:
    """How to reach and query the teacher server (`teacher.args` of a `served:URL` teacher)."""

    url: str
    vocab_size: int
    model: str | None = None
    protocol: str = "vllm"
    top_logprobs: int = 20
    concurrency: int = 4
    prompts_per_request: int = 8
    timeout: float = 120.0
    retries: int = 5
    backoff: float = 0.5
    check_rows: int = 4
    special_ids: tuple[int, ...] = field(default_factory=tuple)
    where: str = "recipe.teacher.args"

    def model_field(self) -> dict[str, str]:
        """The request's "model" entry: the served model's name when one is set (a server may host several)."""
        return {} if self.model is None else {"model": self.model}

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServedError(f"{self.where.rsplit('.', 1)[0]}.model: {SERVED_PREFIX}{self.url!r} is not an http(s) "
                              "URL; write served:http://HOST:PORT.")
        if self.protocol not in PROTOCOLS:
            raise ServedError(f"{self.where}.protocol: {self.protocol!r}; use one of {list(PROTOCOLS)}.")
        for name in ("vocab_size", "top_logprobs", "concurrency", "prompts_per_request"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ServedError(f"{self.where}.{name}: must be an integer >= 1; got {getattr(self, name)!r}.")
        if self.top_logprobs > self.vocab_size:
            raise ServedError(f"{self.where}.top_logprobs: {self.top_logprobs} is more than the vocabulary "
                              f"({self.vocab_size}).")
        if not self.timeout > 0 or self.retries < 0 or self.backoff < 0 or self.check_rows < 0:
            raise ServedError(f"{self.where}: timeout must be > 0 and retries, backoff, check_rows >= 0.")

    def identity(self) -> dict[str, Any]:
        """What makes the teacher's answers what they are (recorded in the cache's teacher fingerprint)."""
        return {"url": self.url.rstrip("/"), "model": self.model, "protocol": self.protocol,
                "top_logprobs": self.top_logprobs, "vocab_size": self.vocab_size}


def settings_from_args(url: str, args: dict[str, Any], where: str = "recipe.teacher.args") -> ServedSettings:
    """`ServedSettings` from a recipe's `teacher.args`, naming an unknown key."""
    known = {f for f in ServedSettings.__dataclass_fields__ if f not in ("url", "where")}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ServedError(f"{where}: unknown key(s) {unknown} for a served teacher; it takes {sorted(known)}.")
    if "vocab_size" not in args:
        raise ServedError(f"{where}.vocab_size: a served teacher needs the vocabulary size (the student's logits "
                          "width, e.g. vocab_size: 32000).")
    values = dict(args)
    if "special_ids" in values:
        values["special_ids"] = tuple(int(i) for i in values["special_ids"])
    return ServedSettings(url=url, where=where, **values)


# ------------------------------------------------------------------------------------------------- transport


class _Transport:
    """JSON over HTTP with bounded retries: one connection per request, so threads share nothing."""

    def __init__(self, settings: ServedSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings, self.sleep = settings, sleep
        parts = urlsplit(settings.url)
        self.https, self.host, self.port = parts.scheme == "https", parts.hostname, parts.port
        self.base = parts.path.rstrip("/")

    def _once(self, path: str, body: bytes) -> tuple[int, bytes]:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.settings.timeout)
        try:
            conn.request("POST", self.base + path, body=body, headers={"Content-Type": "application/json",
                                                                       "Accept": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post(self, path: str, payload: dict[str, Any], missing_ok: bool = False) -> Any:
        """The decoded JSON answer; with `missing_ok` (an optional endpoint such as /tokenize), None when the server
        has no such endpoint or does not take this request shape (404, 405, 400, 422)."""
        body = json.dumps(payload).encode()
        attempts = self.settings.retries + 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                self.sleep(min(self.settings.backoff * 2 ** (attempt - 1), 30.0))
            try:
                status, data = self._once(path, body)
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, dropped, timed out
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if status in (400, 404, 405, 422) and missing_ok:
                return None
            if status in _RETRY_STATUS:
                last = f"HTTP {status}: {data[:200].decode(errors='replace')}"
                continue
            if status == 404:
                raise ServedError(f"teacher server {self.settings.url} has no {path} (HTTP 404). Give its base URL "
                                  "(served:http://HOST:PORT, without /v1) and the protocol it speaks "
                                  f"({self.settings.where}.protocol: {' or '.join(PROTOCOLS)}).")
            if status != 200:
                raise ServedError(f"teacher server {self.settings.url}{path} refused the request (HTTP {status}: "
                                  f"{data[:300].decode(errors='replace')}). Check {self.settings.where} (model, "
                                  "top_logprobs within the server's --max-logprobs, protocol).")
            try:
                return json.loads(data)
            except json.JSONDecodeError:  # a body cut off mid-way: the connection dropped
                last = "an incomplete or non-JSON answer"
                continue
        raise ServedError(f"teacher server {self.settings.url}{path}: no answer after {attempts} attempts "
                          f"(last: {last}; timeout {self.settings.timeout:g} s). Check that the server is up, or "
                          f"raise {self.settings.where}.retries / timeout; rerun to resume the cache build.")


# --------------------------------------------------------------------------------------------- protocols


@dataclass
class PromptLogprobs:
    """One prompt's answer in the server's convention: row i (i >= 1) is the top-N of log p(token_i | < i)."""

    values: Tensor  # (L, N) float64 log-probabilities, row 0 unused
    indices: Tensor  # (L, N) int64 token ids


def _check_entry(settings: ServedSettings, top: list[tuple[float, int]], i: int,
                 where: str) -> list[tuple[float, int]]:
    """The N most likely (logprob, id) of position i, checked: N of them, inside the vocabulary, normalised."""
    n = settings.top_logprobs
    if len(top) < n:
        raise ServedError(f"{where}: position {i} has {len(top)} log-probabilities, fewer than top_logprobs={n}. "
                          f"Lower {settings.where}.top_logprobs, or start the server with a higher --max-logprobs.")
    top = sorted(top, key=lambda pair: -pair[0])[:n]
    bad = [tid for _, tid in top if not 0 <= tid < settings.vocab_size]
    if bad:
        raise ServedError(f"{where}: token id {bad[0]} is outside the vocabulary ({settings.vocab_size}); the "
                          f"server's model is not this vocabulary's. Check {settings.where}.vocab_size and model.")
    if torch.logsumexp(torch.tensor([lp for lp, _ in top], dtype=torch.float64), 0) > _NORMALISED:
        raise ServedError(f"{where}: the top-{n} probabilities at position {i} sum to more than 1, so they are not "
                          "the model's normalised log-probabilities (a server-side temperature or penalty?). Serve "
                          "raw log-probabilities (vLLM: --logprobs-mode raw_logprobs).")
    return top


def _stack(ids: Sequence[int], tops: list[list[tuple[float, int]]]) -> PromptLogprobs:
    n = len(tops[0]) if tops else 0
    values = torch.zeros(len(ids), n, dtype=torch.float64)
    indices = torch.zeros(len(ids), n, dtype=torch.int64)
    for i, top in enumerate(tops, start=1):
        values[i] = torch.tensor([lp for lp, _ in top], dtype=torch.float64)
        indices[i] = torch.tensor([tid for _, tid in top], dtype=torch.int64)
    return PromptLogprobs(values, indices)


def _echo_error(settings: ServedSettings, where: str, i: int, sent: int | None, got: Any) -> ServedError:
    return ServedError(f"{where}: the server echoed token {got!r} at position {i} where {sent} was sent, so it did "
                       "not read the prompt as these token ids. Check that the server's model and tokenizer are "
                       f"the data's ({settings.where}.model).")


def vllm_request(rows: list[list[int]], settings: ServedSettings) -> tuple[str, dict[str, Any]]:
    payload: dict[str, Any] = {"prompt": rows, "max_tokens": 1, "temperature": 1.0, "top_p": 1.0,
                               "prompt_logprobs": settings.top_logprobs, "add_special_tokens": False,
                               **settings.model_field()}
    return "/v1/completions", payload


def vllm_parse(answer: Any, rows: list[list[int]], settings: ServedSettings) -> list[PromptLogprobs]:
    where = f"teacher server {settings.url} (vllm)"
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or len(choices) != len(rows):
        raise ServedError(f"{where}: expected {len(rows)} choices with prompt_logprobs, got "
                          f"{type(choices).__name__ if not isinstance(choices, list) else len(choices)}. Is it a "
                          "vLLM-compatible /v1/completions server (protocol: vllm)?")
    out = []
    for choice in sorted(choices, key=lambda c: c.get("index", 0)):
        ids = rows[choice.get("index", 0)]
        entries = choice.get("prompt_logprobs")
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise ServedError(f"{where}: a choice has no prompt_logprobs for its {len(ids)} prompt tokens; the "
                              "server does not support vLLM's prompt_logprobs extension.")
        echoed = choice.get("prompt_token_ids")
        if echoed is not None and list(echoed) != list(ids):
            i = next((j for j, (a, b) in enumerate(zip(echoed, ids, strict=False)) if a != b),
                     min(len(echoed), len(ids)))
            raise _echo_error(settings, where, i, ids[i] if i < len(ids) else None,
                              echoed[i] if i < len(echoed) else None)
        tops = []
        for i in range(1, len(ids)):
            entry = entries[i]
            if not isinstance(entry, dict) or str(ids[i]) not in entry:  # vLLM always lists the prompt's own token
                raise _echo_error(settings, where, i, ids[i], None if not isinstance(entry, dict) else
                                  sorted(entry)[:3])
            pairs = [(float(v["logprob"]), int(k)) for k, v in entry.items()]
            tops.append(_check_entry(settings, pairs, i, where))
        out.append(_stack(ids, tops))
    return out


def sglang_request(rows: list[list[int]], settings: ServedSettings) -> tuple[str, dict[str, Any]]:
    payload: dict[str, Any] = {"input_ids": rows, "sampling_params": {"max_new_tokens": 1, "temperature": 1.0},
                               "return_logprob": True, "logprob_start_len": 0,
                               "top_logprobs_num": settings.top_logprobs, "return_text_in_logprobs": False,
                               **settings.model_field()}
    return "/generate", payload


def sglang_parse(answer: Any, rows: list[list[int]], settings: ServedSettings) -> list[PromptLogprobs]:
    where = f"teacher server {settings.url} (sglang)"
    answers = answer if isinstance(answer, list) else [answer]
    if len(answers) != len(rows):
        raise ServedError(f"{where}: expected {len(rows)} answers, got {len(answers)}. Is it an SGLang /generate "
                          "server (protocol: sglang)?")
    out = []
    for ids, item in zip(rows, answers, strict=True):
        meta = item.get("meta_info", {}) if isinstance(item, dict) else {}
        tokens, tops_in = meta.get("input_token_logprobs"), meta.get("input_top_logprobs")
        if not isinstance(tokens, list) or not isinstance(tops_in, list) or len(tops_in) != len(ids) or \
                len(tokens) != len(ids):
            raise ServedError(f"{where}: no input_top_logprobs for the {len(ids)} prompt tokens; start the request "
                              "with logprob_start_len 0 on a server that returns input log-probabilities.")
        tops = []
        for i in range(1, len(ids)):
            if int(tokens[i][1]) != ids[i]:
                raise _echo_error(settings, where, i, ids[i], tokens[i][1])
            pairs = [(float(lp), int(tid)) for lp, tid, *_ in tops_in[i]]
            tops.append(_check_entry(settings, pairs, i, where))
        out.append(_stack(ids, tops))
    return out


_PROTOCOLS = {"vllm": (vllm_request, vllm_parse), "sglang": (sglang_request, sglang_parse)}


# ------------------------------------------------------------------------------------------------- client


class ServedClient:
    """Prompt log-probabilities of token-id rows from the server, `concurrency` requests at a time."""

    def __init__(self, settings: ServedSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.transport = _Transport(settings, sleep)

    def _request(self, rows: list[list[int]]) -> list[PromptLogprobs]:
        make, parse = _PROTOCOLS[self.settings.protocol]
        path, payload = make(rows, self.settings)
        return parse(self.transport.post(path, payload), rows, self.settings)

    def prompt_logprobs(self, rows: list[list[int]]) -> list[PromptLogprobs]:
        """One `PromptLogprobs` per row (rows of at least 2 tokens), in order."""
        step = self.settings.prompts_per_request
        groups = [rows[i:i + step] for i in range(0, len(rows), step)]
        if len(groups) <= 1:
            return [item for group in groups for item in self._request(group)]
        with ThreadPoolExecutor(max_workers=min(self.settings.concurrency, len(groups)),
                                thread_name_prefix="kdforge-served") as pool:
            return [item for answer in pool.map(self._request, groups) for item in answer]

    def check_tokenizer(self, rows: list[list[int]], local: Any = None) -> str:
        """Compare the server's tokenizer with the data's on `rows`; raise on the first difference.

        With `local` (the tokenizer the data was encoded with: a `tokenizers.Tokenizer` or a transformers
        tokenizer), each row is decoded locally (special tokens skipped) and the text encoded by both; the ids
        must agree ("checked"). Without it, each row's ids (less `special_ids` at its ends) go through the
        server's /detokenize and /tokenize and must come back unchanged ("round trip": this catches a tokenizer
        with other ids for the same pieces, not one that differs only in how it splits text). "unavailable":
        the server has no such endpoints; the echoed ids are still checked on every answer.
        """
        s = self.settings
        model = s.model_field()
        for ids in rows:
            inner = list(ids)
            while inner and inner[0] in s.special_ids:
                inner.pop(0)
            while inner and inner[-1] in s.special_ids:
                inner.pop()
            if not inner:
                continue
            if local is not None:
                text = local.decode(inner, skip_special_tokens=True)
                mine = local.encode(text, add_special_tokens=False)
                mine = list(getattr(mine, "ids", mine))
            else:
                answer = self.transport.post("/detokenize", {**model, "tokens": inner}, missing_ok=True)
                text = answer.get("prompt", answer.get("text")) if isinstance(answer, dict) else None
                mine = inner
            back = None if text is None else self.transport.post(
                "/tokenize", {**model, "prompt": text, "add_special_tokens": False}, missing_ok=True)
            theirs = back.get("tokens") if isinstance(back, dict) else None
            if not isinstance(theirs, list):
                logger.warning("served teacher %s has no /tokenize or /detokenize endpoint; its tokenizer is "
                               "checked by the echoed token ids only", s.url)
                return "unavailable"
            if theirs != mine:
                at = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                          min(len(mine), len(theirs)))
                raise ServedError(
                    f"{s.where}: the server's tokenizer is not the data's: {text[:40]!r} is {mine[at:at + 4]} "
                    f"at token {at} for the data but {theirs[at:at + 4]} for the server; serve the teacher with "
                    "the tokenizer the data was encoded with.")
        return "checked" if local is not None else "round trip"


# ------------------------------------------------------------------------------------------------ teacher


def _lengths(input_ids: Tensor, attention_mask: Tensor | None, where: str) -> Tensor:
    """(B,) real tokens per row; the mask must be a right-padded prefix (kdforge's rows are)."""
    if attention_mask is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long)
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    prefix = torch.arange(mask.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    if not torch.equal(prefix, mask.cpu()):
        raise ServedError(f"{where}: attention_mask is not right-padded (real tokens first); a served teacher is "
                          "sent each row's real tokens.")
    return lengths


class ServedTeacher(nn.Module):
    """A teacher behind an inference server, as a module for `kdforge.cache.write_cache`: `forward(input_ids,
    attention_mask=None)` returns the top-N log-probabilities of every position as a `TopK` (log-sum-exp 0), in
    kdforge's alignment (position t predicts input_ids[t + 1]). It holds no weights: `fingerprint()` (server,
    model, N) stands for them in the cache's fingerprints. `tokenizer`: the one the data was encoded with (a
    `tokenizers.Tokenizer` or a transformers tokenizer), checked against the server's before the first request.
    """

    def __init__(self, settings: ServedSettings, tokenizer: Any = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        self.settings, self.tokenizer = settings, tokenizer
        self.client = ServedClient(settings, sleep)
        self.tokenizer_check: str | None = None  # "checked", "round trip" or "unavailable", once rows were checked
        self._rows_checked = 0

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps({"served": self.settings.identity()}, sort_keys=True).encode()).hexdigest()

    @torch.no_grad()
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TopK:
        s = self.settings
        ids = input_ids.detach().cpu().long()
        lengths = _lengths(ids, None if attention_mask is None else attention_mask.detach().cpu(), s.where)
        rows = [ids[b, :int(n)].tolist() for b, n in enumerate(lengths)]
        wanted = [b for b, row in enumerate(rows) if len(row) >= 2]
        # the server's tokenizer is compared with the data's on the first check_rows rows, before they are asked
        # for (a cache build starts with a one-row probe: the next batches complete the count)
        fresh = wanted[:max(s.check_rows - self._rows_checked, 0)]
        if fresh and self.tokenizer_check != "unavailable":
            self.tokenizer_check = self.client.check_tokenizer([rows[b] for b in fresh], self.tokenizer)
            self._rows_checked += len(fresh)
        answers = self.client.prompt_logprobs([rows[b] for b in wanted])
        batch, length, n = ids.shape[0], ids.shape[1], s.top_logprobs
        # positions with no next token: a uniform stand-in (a valid distribution; labels there are -100)
        values = torch.full((batch, length, n), -math.log(s.vocab_size), dtype=torch.float64)
        indices = torch.arange(n, dtype=torch.int64).expand(batch, length, n).clone()
        for b, answer in zip(wanted, answers, strict=True):
            real = len(rows[b])
            values[b, :real - 1] = answer.values[1:real]  # kdforge position t <- server entry t + 1
            indices[b, :real - 1] = answer.indices[1:real]
        return TopK(values=values.float(), indices=indices, logsumexp=torch.zeros(batch, length),
                    vocab_size=s.vocab_size)


def served_teacher(url: str, args: dict[str, Any], where: str = "recipe.teacher.args",
                   tokenizer: Any = None) -> ServedTeacher:
    """`teacher.model: served:URL` with `teacher.args` (see `ServedSettings`); `tokenizer`: the data's."""
    return ServedTeacher(settings_from_args(url, args, where), tokenizer)


__all__ = ["PROTOCOLS", "SERVED_PREFIX", "PromptLogprobs", "ServedClient", "ServedError", "ServedSettings",
           "ServedTeacher", "served_teacher", "settings_from_args"]
