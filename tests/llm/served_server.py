"""A protocol-conformant local teacher server for the served-teacher tests (stdlib http.server in a thread).

It serves a tiny `transformers` causal LM (random weights from a config) the way the real servers answer:

* ``POST /v1/completions`` as vLLM does with its ``prompt_logprobs`` extension: ``prompt`` a token-id list or a
  list of them, one choice per prompt (``index``), ``prompt_logprobs[0] = None`` and, for i >= 1, a dict
  ``{str(token id): {"logprob", "rank", "decoded_token"}}`` with the top N of log p(. | tokens < i) and the prompt's
  own token i (with its rank, as an extra entry when it is not in the top N);
* ``POST /generate`` as SGLang's native API does (``input_ids``, ``return_logprob``, ``logprob_start_len``,
  ``top_logprobs_num`` -> ``meta_info.input_token_logprobs`` / ``input_top_logprobs``);
* ``POST /tokenize`` and ``/detokenize`` as vLLM's (``{"prompt", "add_special_tokens"}`` -> ``{"tokens", "count",
  "max_model_len"}``; ``{"tokens"}`` -> ``{"prompt"}``).

Faults for the tests: the first `drop_first` log-prob requests get the connection closed without an answer, the
next `fail_first` get HTTP `fail_status` (503), and after `die_after` answered log-prob requests every later one is
dropped (a server that went away mid-build); `delay` slows every answer (to see requests overlap, `max_inflight`).
`served` records each prompt answered, in order; `port` (0: any free one) lets a restarted server keep its URL.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
import torch.nn.functional as F


class TeacherServer:
    """Start with `with TeacherServer(model, tokenizer) as server:`; `server.url` is its base URL."""

    def __init__(self, model, tokenizer=None, model_name: str = "tiny-teacher", drop_first: int = 0,
                 fail_first: int = 0, fail_status: int = 503, die_after: int | None = None,
                 max_logprobs: int = 20, delay: float = 0.0, port: int = 0, rewrite=None) -> None:
        self.model, self.tokenizer, self.model_name = model.eval(), tokenizer, model_name
        self.drop_first, self.fail_first, self.fail_status = drop_first, fail_first, fail_status
        self.die_after, self.max_logprobs, self.delay, self.port = die_after, max_logprobs, delay, port
        self.rewrite = rewrite  # applied to every prompt before it is read (a server that re-tokenizes)
        self.inflight = self.max_inflight = 0  # log-prob requests being answered at once, and the most seen
        self.served: list[tuple[int, ...]] = []  # every prompt answered
        self.attempts = 0  # log-prob requests received, answered or not
        self.answered = 0
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------------------------------- model

    @torch.no_grad()
    def log_probs(self, ids: list[int]) -> torch.Tensor:
        """(L, V) log p(. | tokens <= t) at temperature 1; row t is the distribution of token t + 1."""
        with self._model_lock:
            logits = self.model(input_ids=torch.tensor([ids])).logits[0].double()
        return F.log_softmax(logits, dim=-1)

    def _prompt_top(self, ids: list[int], n: int) -> list[list[tuple[float, int, int]] | None]:
        """Per prompt position i: None for 0, else [(logprob, token id, rank)] of the top n and token i."""
        lp = self.log_probs(ids)
        out: list[list[tuple[float, int, int]] | None] = [None]
        for i in range(1, len(ids)):
            row = lp[i - 1]  # the distribution of token i given tokens < i
            order = torch.argsort(row, descending=True)
            entries = [(float(row[t]), int(t), r + 1) for r, t in enumerate(order[:n].tolist())]
            if ids[i] not in [t for _, t, _ in entries]:
                rank = int((row > row[ids[i]]).sum()) + 1
                entries.append((float(row[ids[i]]), ids[i], rank))
            out.append(entries)
        return out

    def _decode(self, token: int) -> str:
        return self.tokenizer.id_to_token(token) if self.tokenizer is not None else str(token)

    # ------------------------------------------------------------------------------------------ answers

    def completions(self, body: dict) -> dict:
        n = int(body.get("prompt_logprobs") or 0)
        if n > self.max_logprobs:
            raise ValueError(f"Requested prompt logprobs of {n}, which is greater than max allowed: "
                             f"{self.max_logprobs}")
        prompts = body["prompt"]
        prompts = [prompts] if prompts and isinstance(prompts[0], int) else prompts
        choices = []
        for index, ids in enumerate(prompts):
            ids = self.rewrite(ids) if self.rewrite is not None else ids
            entries = self._prompt_top(ids, n)
            prompt_logprobs = [None if e is None else {str(t): {"logprob": lp, "rank": r,
                                                                 "decoded_token": self._decode(t)}
                                                       for lp, t, r in e} for e in entries]
            choices.append({"index": index, "text": "", "logprobs": None, "finish_reason": "length",
                            "prompt_logprobs": prompt_logprobs})
            self._record(ids)
        return {"id": "cmpl-test", "object": "text_completion", "model": body.get("model", self.model_name),
                "choices": choices, "usage": {"prompt_tokens": sum(map(len, prompts))}}

    def generate(self, body: dict) -> list | dict:
        n = int(body.get("top_logprobs_num") or 0)
        prompts = body["input_ids"]
        single = bool(prompts) and isinstance(prompts[0], int)
        prompts = [prompts] if single else prompts
        results = []
        for ids in prompts:
            ids = self.rewrite(ids) if self.rewrite is not None else ids
            lp = self.log_probs(ids)
            tokens = [[None, ids[0], None]] + [[float(lp[i - 1, ids[i]]), ids[i], None] for i in range(1, len(ids))]
            tops = [None] + [[[lp_, t, None] for lp_, t, _ in e[:n]] for e in self._prompt_top(ids, n)[1:]]
            results.append({"text": "", "meta_info": {"prompt_tokens": len(ids), "input_token_logprobs": tokens,
                                                      "input_top_logprobs": tops}})
            self._record(ids)
        return results[0] if single else results

    def tokenize(self, body: dict) -> dict:
        ids = self.tokenizer.encode(body["prompt"], add_special_tokens=bool(body.get("add_special_tokens", True))).ids
        return {"tokens": ids, "count": len(ids), "max_model_len": 1024}

    def detokenize(self, body: dict) -> dict:
        return {"prompt": self.tokenizer.decode(body["tokens"], skip_special_tokens=False)}

    def _record(self, ids: list[int]) -> None:
        with self._lock:
            self.served.append(tuple(ids))

    # -------------------------------------------------------------------------------------------- http

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                routes = {"/v1/completions": server.completions, "/generate": server.generate,
                          "/tokenize": server.tokenize, "/detokenize": server.detokenize}
                route = routes.get(self.path)
                if route is None or (self.path in ("/tokenize", "/detokenize") and server.tokenizer is None):
                    return self._send(404, {"detail": "Not Found"})
                if self.path in ("/v1/completions", "/generate"):
                    with server._lock:
                        server.attempts += 1
                        attempt = server.attempts
                        dead = server.die_after is not None and server.answered >= server.die_after
                    if attempt <= server.drop_first or dead:
                        return self._drop()
                    if attempt <= server.drop_first + server.fail_first:
                        return self._send(server.fail_status, {"error": "overloaded"})
                logprobs = self.path in ("/v1/completions", "/generate")
                if logprobs:
                    with server._lock:
                        server.inflight += 1
                        server.max_inflight = max(server.max_inflight, server.inflight)
                    time.sleep(server.delay)
                try:
                    payload = route(body)
                except (ValueError, KeyError) as exc:
                    return self._send(400, {"object": "error", "message": str(exc), "code": 400})
                finally:
                    if logprobs:
                        with server._lock:
                            server.inflight -= 1
                if logprobs:
                    with server._lock:
                        server.answered += 1
                self._send(200, payload)

        return Handler

    def __enter__(self) -> TeacherServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
