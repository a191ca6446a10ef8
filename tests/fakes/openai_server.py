"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks ``/v1/chat/completions`` and ``/v1/models`` well enough for the official ``openai`` client,
can require credentials the way servers behind a gateway do (a Bearer key, HTTP Basic auth, a query key),
answers deterministically (so runs can be compared), and injects faults on demand: 429 with
Retry-After, 500, slow replies, malformed and truncated bodies, bad JSON content, context-length
errors. It counts requests and the peak number in flight so tests can check what the client did.

Run standalone (benchmarks use a separate process so the client's CPU is measured alone):
    python -m tests.fakes.openai_server --port 8000 --latency 0.1
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

FAULTS = ("rate_limit", "server_error", "slow", "malformed_body", "truncated", "bad_json", "context_length")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def sample_from_schema(schema: dict[str, Any], seed: str) -> Any:
    """A deterministic value that validates against a (simple) JSON schema, varied by ``seed``."""
    kind = schema.get("type")
    if "enum" in schema:
        values = schema["enum"]
        return values[int(digest(seed), 16) % len(values)]
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        return {name: sample_from_schema(sub, f"{seed}/{name}")
                for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(schema.get("minItems", 1), 1)
        if "maxItems" in schema:
            count = min(count, schema["maxItems"])
        return [sample_from_schema(schema.get("items", {"type": "string"}), f"{seed}[{i}]")
                for i in range(count)]
    if kind == "integer":
        low, high = schema.get("minimum", 0), schema.get("maximum", 100)
        return low + int(digest(seed), 16) % (high - low + 1)
    if kind == "number":
        return float(schema.get("minimum", 0)) + 0.5
    if kind == "boolean":
        return int(digest(seed), 16) % 2 == 0
    return f"{seed.rsplit('/', 1)[-1]} {digest(seed)}"


def default_reply(body: dict[str, Any]) -> str:
    """Deterministic reply: JSON matching the requested schema, else an echo of the last message."""
    messages = body.get("messages", [])
    last = messages[-1]["content"] if messages else ""
    key = digest(json.dumps(messages, sort_keys=True))
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(sample_from_schema(fmt["json_schema"]["schema"], key))
    return f"reply {key}: {last[:200]}"


class FakeOpenAIServer(LoopbackServer):
    """Start with ``with FakeOpenAIServer() as server:``; ``server.url`` is the ``base_url``."""

    label, url_path, backlog = "fake OpenAI server", "/v1", 1024

    def __init__(self, *, latency: float = 0.0, reply: Callable[[dict[str, Any]], str] | None = None,
                 fault_rates: dict[str, float] | None = None, seed: int = 0, retry_after: float = 0.05,
                 slow_seconds: float = 5.0, api_key: str | None = None, models: list[str] | None = None,
                 basic_auth: tuple[str, str] | None = None, query: dict[str, str] | None = None, port: int = 0):
        self.latency = latency
        self.reply = reply or default_reply
        self.fault_rates = fault_rates or {}
        unknown = set(self.fault_rates) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}"
        self.rng = random.Random(seed)
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.api_key = api_key
        self.basic_auth = basic_auth  # (user, password) every request must carry as Authorization: Basic
        self.query = query or {}  # query parameters every request must carry (?api_key=...)
        self.seen: list[str] = []  # path and query of every request, in arrival order
        self.models = models or ["fake-model", "fake-judge"]
        self.script: deque[str] = deque()  # faults for the next requests, in order, before random ones
        self.requests: list[dict[str, Any]] = []  # every chat body received, in arrival order
        self.answered: list[dict[str, Any]] = []  # bodies that got a 200 with a good reply
        self.in_flight = 0
        self.peak_in_flight = 0
        self.arrivals: list[float] = []
        super().__init__(port)

    # -- lifecycle (LoopbackServer does the rest) -----------------------------------------------
    def new_loop(self) -> asyncio.AbstractEventLoop:
        try:
            import uvloop  # the fake should never be the bottleneck of a client benchmark
            return uvloop.new_event_loop()
        except ImportError:
            return asyncio.new_event_loop()

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        return app

    # -- handlers ------------------------------------------------------------------------------
    def _unauthorized(self, request: web.Request) -> web.Response | None:
        self.seen.append(request.path_qs)
        if any(request.query.get(name) != value for name, value in self.query.items()):
            # echoes what it got, as some gateways do: a client that passes this text on must mask it
            return _error(401, "invalid_query_key", f"Missing or wrong key in {request.path_qs}", "invalid_request_error")
        if self.basic_auth is not None:
            expected = "Basic " + base64.b64encode(":".join(self.basic_auth).encode()).decode()
            offered = request.headers.get("Authorization", "")
            if offered != expected:
                return _error(401, "invalid_basic_auth", f"Basic auth refused for {offered or 'no credentials'}",
                              "invalid_request_error")
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "invalid_api_key", "Incorrect API key provided.", "invalid_request_error")
        return None

    async def _models(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})

    def _pick_fault(self) -> str | None:
        if self.script:
            fault = self.script.popleft()
            return None if fault == "ok" else fault
        roll = self.rng.random()
        for fault, rate in self.fault_rates.items():
            if roll < rate:
                return fault
            roll -= rate
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        body = await request.json()
        self.requests.append(body)
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            fault = self._pick_fault()
            if self.latency:
                await asyncio.sleep(self.latency)
            if body.get("model") not in self.models:
                return _error(404, "model_not_found", f"The model `{body.get('model')}` does not exist",
                              "invalid_request_error")
            if fault == "rate_limit":
                return _error(429, "rate_limit_exceeded", "Rate limit reached", "requests",
                              headers={"Retry-After": str(self.retry_after)})
            if fault == "server_error":
                return _error(500, "server_error", "The server had an error", "server_error")
            if fault == "context_length":
                return _error(400, "context_length_exceeded", "This model's maximum context length is "
                              "8192 tokens. However, your messages resulted in 9000 tokens.",
                              "invalid_request_error")
            if fault == "slow":
                await asyncio.sleep(self.slow_seconds)
            if fault == "malformed_body":
                return web.Response(status=200, text='{"id": "x", "choices": [', content_type="application/json")
            if fault == "truncated":
                return await _truncated(request)
            text = "{'not': json,,," if fault == "bad_json" else self.reply(body)
            if fault is None:
                self.answered.append(body)
            return web.json_response(_completion(body, text))
        finally:
            self.in_flight -= 1


def _error(status: int, code: str, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status, headers=headers)


async def _truncated(request: web.Request) -> web.StreamResponse:
    """Promise a long body, send part of it, then drop the connection."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = 4096
    await response.prepare(request)
    await response.write(b'{"id": "chatcmpl-x", "object": "chat.completion", "choi')
    request.transport.close()
    return response


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    prompt_chars = sum(len(m.get("content") or "") for m in body.get("messages", []))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 10**9
    out_tokens = max(1, len(text) // 4)
    finish = "length" if out_tokens > max_tokens else "stop"
    return {
        "id": f"chatcmpl-{digest(text)}", "object": "chat.completion", "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": out_tokens,
                  "total_tokens": max(1, prompt_chars // 4) + out_tokens},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeOpenAIServer(latency=args.latency, port=args.port)
    server.start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
