"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

It speaks ``/v1/chat/completions`` and ``/v1/models`` well enough for the official ``openai`` client,
can require credentials the way servers behind a gateway do (a Bearer key, HTTP Basic auth, a query key),
answers deterministically (so runs can be compared), and injects faults on demand: 429 with
Retry-After, 500, slow replies, malformed and truncated bodies, bad JSON content, context-length
errors. It counts requests and the peak number in flight so tests can check what the client did.

``flavor`` picks which real server's structured-output dialect it speaks, with the error bodies that server
really sends (see FLAVORS): ``llama_cpp`` (llama-cpp-python's ``llama_cpp.server``), ``openai``, ``vllm_legacy``,
``nim`` (NVIDIA NIM behind Cloudera AI Inference), ``text_only`` (no structured output at all) and ``lenient``
(accepts every dialect). Replies follow the schema however the request carried it, in the dialects the flavor
honours (``requested_schema``); a field the flavor ignores is invisible to ``reply``.

Run standalone (benchmarks use a separate process so the client's CPU is measured alone):
    python -m tests.fakes.openai_server --port 8000 --latency 0.1 --flavor llama_cpp
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

FAULTS = ("rate_limit", "server_error", "slow", "malformed_body", "truncated", "bad_json", "context_length",
          "invalid_request")

FLAVORS = ("lenient", "llama_cpp", "openai", "vllm_legacy", "nim", "text_only")
DEFAULT_FLAVOR = "llama_cpp"  # the strictest real server most users can run: every workflow negotiates

# Where each flavor reads a schema from (requested_schema's dialects). "prompt" is the schema the client wrote
# into a message: every server "honours" it, since the model reads it.
DIALECTS = ("json_schema", "json_object", "guided_json", "nvext", "tool", "prompt")
HONOURS: dict[str, frozenset[str]] = {
    "lenient": frozenset(DIALECTS),
    "llama_cpp": frozenset({"json_object", "tool", "prompt"}),
    "openai": frozenset({"json_schema", "tool", "prompt"}),
    "vllm_legacy": frozenset({"guided_json", "tool", "prompt"}),
    "nim": frozenset({"nvext", "tool", "prompt"}),
    "text_only": frozenset({"prompt"}),
}
# the request fields OpenAI's /v1/chat/completions knows; "openai" and "text_only" refuse any other
OPENAI_FIELDS = frozenset({
    "model", "messages", "temperature", "top_p", "n", "stream", "stream_options", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "user", "seed", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
    "function_call", "service_tier", "store", "metadata", "reasoning_effort", "modalities", "audio",
    "prediction", "web_search_options"})
SCHEMA_MARKER = "validates against this JSON schema:\n"  # what the client writes before a schema in a prompt


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


def _text(content: Any) -> str:
    """A message's content as text (a string, or a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def schema_in_prompt(texts: list[str]) -> dict[str, Any] | None:
    """The JSON schema written after SCHEMA_MARKER, up to the end of the first text that carries one."""
    for text in texts:
        at = text.rfind(SCHEMA_MARKER)
        if at < 0:
            continue
        rest = text[at + len(SCHEMA_MARKER):].strip()
        try:
            schema = json.loads(rest)
        except json.JSONDecodeError:
            try:
                schema = json.JSONDecoder().raw_decode(rest)[0]
            except json.JSONDecodeError:
                continue
        if isinstance(schema, dict):
            return schema
    return None


def forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function a request forces (tool_choice naming it, or "required" with one tool), else None."""
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t.get("name") == name), None)
    if choice == "required" and len(tools) == 1:
        return tools[0]
    return None


def requested_schema(body: dict[str, Any], dialects: frozenset[str] | tuple[str, ...] = DIALECTS
                     ) -> dict[str, Any] | None:
    """The JSON schema a chat request asks its reply to follow, in whichever of ``dialects`` carries one:
    response_format json_schema, response_format json_object + ``schema``, ``guided_json``,
    ``nvext.guided_json``, a forced tool's ``parameters``, and last the schema written in the prompt."""
    fmt = body.get("response_format") or {}
    candidates = {
        "json_schema": (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None,
        "json_object": fmt.get("schema") if fmt.get("type") == "json_object" else None,
        "guided_json": body.get("guided_json"),
        "nvext": (body.get("nvext") or {}).get("guided_json") if isinstance(body.get("nvext"), dict) else None,
        "tool": (forced_tool(body) or {}).get("parameters"),
    }
    for dialect, schema in candidates.items():
        if dialect in dialects and isinstance(schema, str):  # guided_json may be sent as a JSON string
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError:
                schema = None
        if dialect in dialects and isinstance(schema, dict):
            return schema
    if "prompt" in dialects:
        return schema_in_prompt([_text(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict)])
    return None


def default_reply(body: dict[str, Any]) -> str:
    """Deterministic reply: JSON following the requested schema (a JSON object for json_object without one),
    else an echo of the last message."""
    messages = body.get("messages", [])
    last = _text(messages[-1].get("content")) if messages else ""
    key = digest(json.dumps(messages, sort_keys=True))
    schema = requested_schema(body)
    if schema is not None:
        return json.dumps(sample_from_schema(schema, key))
    echo = f"reply {key}: {last[:200]}"
    if (body.get("response_format") or {}).get("type") == "json_object":
        return json.dumps({"reply": echo})
    return echo


class FakeOpenAIServer(LoopbackServer):
    """Start with ``with FakeOpenAIServer() as server:``; ``server.url`` is the ``base_url``."""

    label, url_path, backlog = "fake OpenAI server", "/v1", 1024

    def __init__(self, *, latency: float = 0.0, reply: Callable[[dict[str, Any]], str] | None = None,
                 fault_rates: dict[str, float] | None = None, seed: int = 0, retry_after: float = 0.05,
                 slow_seconds: float = 5.0, api_key: str | None = None, models: list[str] | None = None,
                 basic_auth: tuple[str, str] | None = None, query: dict[str, str] | None = None, port: int = 0,
                 flavor: str = DEFAULT_FLAVOR, reasoning: Callable[[dict[str, Any]], str | None] | None = None):
        assert flavor in FLAVORS, f"unknown flavor {flavor!r}; one of {FLAVORS}"
        self.flavor = flavor
        self.latency = latency
        self.reply = reply or default_reply
        self.reasoning = reasoning  # body -> the reply's ``reasoning_content`` (a thinking model), None: none
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
        self.served_model: str | None = None  # the model replies name (a server that maps an alias to a snapshot)
        self.script: deque[str] = deque()  # faults for the next requests, in order, before random ones
        # every chat body, in arrival order; ``requests`` leaves out the ones the flavor refused for a structured-output
        # field it does not take (the client's negotiation, tested on its own), so tests that count what a job asked
        # for count each request once
        self.received: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []  # bodies that got a 200 with a good reply
        self.rejected: list[dict[str, Any]] = []  # bodies the flavor refused (a field its real server does not take)
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
        app.router.add_get("/_arrivals", self._arrivals)
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

    async def _arrivals(self, request: web.Request) -> web.Response:
        """How many chat requests arrived, and when the one numbered ``from`` did (``time.monotonic()``, the
        system-wide clock on Linux): benchmarks/generate.py times a run's start-up before its first request."""
        start = int(request.query.get("from", 0))
        first = self.arrivals[start] if start < len(self.arrivals) else None
        return web.json_response({"count": len(self.arrivals), "first": first})

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
        self.received.append(body)
        refusal = self._refusal(body)  # decided first: a refused request draws no scripted or random fault
        if refusal is None:
            self.requests.append(body)
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            fault = self._pick_fault() if refusal is None else None
            if self.latency:
                await asyncio.sleep(self.latency)
            if body.get("model") not in self.models:
                return _error(404, "model_not_found", f"The model `{body.get('model')}` does not exist",
                              "invalid_request_error")
            if refusal is not None:
                self.rejected.append(body)
                return refusal
            if fault == "invalid_request":
                return web.json_response({"detail": [{"type": "extra_forbidden", "loc": ["body", "logit_bias"],
                                                      "msg": "Extra inputs are not permitted"}]}, status=422)
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
            understood = self._understood(body)
            text = "{'not': json,,," if fault == "bad_json" else self.reply(understood)
            if fault is None:
                self.answered.append(body)
            tool = forced_tool(understood) if "tool" in HONOURS[self.flavor] else None
            reply = _completion(body, text, tool)
            thought = self.reasoning(understood) if self.reasoning is not None else None
            if thought is not None:
                reply["choices"][0]["message"]["reasoning_content"] = thought
            if self.served_model:
                reply["model"] = self.served_model
            return web.json_response(reply)
        finally:
            self.in_flight -= 1

    # -- flavors -------------------------------------------------------------------------------
    def _refusal(self, body: dict[str, Any]) -> web.Response | None:
        """The error the flavor's real server answers this body with, or None when it accepts it."""
        flavor = self.flavor
        fmt = body.get("response_format") or {}
        kind = fmt.get("type", "text") if isinstance(fmt, dict) else fmt
        unknown = sorted(set(body) - OPENAI_FIELDS)
        if flavor in ("openai", "text_only") and unknown:
            plural = "s" if len(unknown) > 1 else ""
            return _openai_error(400, f"Unrecognized request argument{plural} supplied: {', '.join(unknown)}")
        if flavor == "text_only":
            if kind != "text":
                return _openai_error(400, "response_format is not supported by this model", "response_format")
            if body.get("tools") or body.get("tool_choice"):
                return _openai_error(400, "tools is not supported by this model", "tools")
            return None
        if flavor == "openai":
            if kind not in ("text", "json_object", "json_schema"):
                return _openai_error(400, f"Invalid value: '{kind}'. Supported values are: 'json_object', "
                                          "'json_schema', and 'text'.", "response_format.type")
            everything = " ".join(_text(m.get("content")) for m in body.get("messages", []) if isinstance(m, dict))
            if kind == "json_object" and "json" not in everything.lower():
                return _openai_error(400, "'messages' must contain the word 'json' in some form, to use "
                                          "'response_format' of type 'json_object'.", "messages")
            return None
        if kind in ("text", "json_object") or flavor == "lenient":
            return None
        if flavor == "llama_cpp":
            # llama-cpp-python's server turns its own pydantic validation error into a 500 with a traceback line
            detail = {"type": "literal_error", "loc": ("body", "response_format", "type"),
                      "msg": "Input should be 'text' or 'json_object'", "input": kind,
                      "ctx": {"expected": "'text' or 'json_object'"}}
            message = (f"1 validation error:\n  {detail!r}\n\n  File \"/usr/local/lib/python3.12/site-packages/"
                       "llama_cpp/server/app.py\", line 376, in create_chat_completion\n    POST /v1/chat/completions")
            return web.json_response({"error": {"message": message, "type": "internal_server_error",
                                                "param": None, "code": None}}, status=500)
        if flavor == "vllm_legacy":
            message = ("1 validation error for ChatCompletionRequest\nresponse_format.type\n  Input should be "
                       f"'text' or 'json_object' [type=literal_error, input_value={kind!r}, input_type="
                       f"{type(kind).__name__}]")
            return web.json_response({"object": "error", "message": message, "type": "BadRequestError",
                                      "param": None, "code": 400}, status=400)
        # nim: FastAPI's own 422 for a request that fails validation
        return web.json_response({"detail": [{"type": "literal_error", "loc": ["body", "response_format", "type"],
                                              "msg": "Input should be 'text' or 'json_object'", "input": kind}]},
                                 status=422)

    def _understood(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body as the flavor's server reads it: fields it ignores are dropped, so ``reply`` (and
        ``requested_schema``) never follow a schema the real server would not have used."""
        honours = HONOURS[self.flavor]
        understood = dict(body)
        if "guided_json" not in honours:
            understood.pop("guided_json", None)
        if "nvext" not in honours:
            understood.pop("nvext", None)
        fmt = understood.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_object" and "json_object" not in honours:
            understood["response_format"] = {k: v for k, v in fmt.items() if k != "schema"}
        if "tool" not in honours:
            understood.pop("tools", None)
            understood.pop("tool_choice", None)
        return understood


def _error(status: int, code: str, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}},
                             status=status, headers=headers)


def _openai_error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                        "code": None}}, status=status)


async def _truncated(request: web.Request) -> web.StreamResponse:
    """Promise a long body, send part of it, then drop the connection."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = 4096
    await response.prepare(request)
    await response.write(b'{"id": "chatcmpl-x", "object": "chat.completion", "choi')
    request.transport.close()
    return response


def _completion(body: dict[str, Any], text: str, tool: dict[str, Any] | None = None) -> dict[str, Any]:
    """A chat.completion; with a forced ``tool`` the reply text is the call's arguments (a JSON string)."""
    prompt_chars = sum(len(_text(m.get("content"))) for m in body.get("messages", []))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 10**9
    out_tokens = max(1, len(text) // 4)
    finish = "length" if out_tokens > max_tokens else ("tool_calls" if tool is not None else "stop")
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{digest(text)}", "type": "function",
             "function": {"name": tool.get("name"), "arguments": text}}]}
    return {
        "id": f"chatcmpl-{digest(text)}", "object": "chat.completion", "created": 0,
        "model": body.get("model"),
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": max(1, prompt_chars // 4), "completion_tokens": out_tokens,
                  "total_tokens": max(1, prompt_chars // 4) + out_tokens},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--flavor", choices=FLAVORS, default=DEFAULT_FLAVOR,
                        help="which real server's structured-output dialect to speak")
    args = parser.parse_args()
    server = FakeOpenAIServer(latency=args.latency, port=args.port, flavor=args.flavor)
    server.start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
