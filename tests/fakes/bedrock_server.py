"""A real HTTP server on 127.0.0.1 that speaks enough AWS Bedrock for the real boto3 client.

Routes (paths from botocore's service models ``bedrock-runtime/2023-09-30`` and ``bedrock/2023-04-20``):
``POST /model/{modelId}/converse`` (Converse), ``GET /foundation-models`` (ListFoundationModels) and
``GET /inference-profiles`` (ListInferenceProfiles, paginated with nextToken). Point both the
``bedrock-runtime`` and the ``bedrock`` client at ``server.url`` via ``endpoint_url``.

Every request must carry a SigV4 ``Authorization`` header, else 403 as AWS answers. Errors are shaped
the way botocore's rest-json parser reads them: the code in the ``x-amzn-ErrorType`` header (AWS sends
``Code:http://internal...``; botocore keeps the part before ``:``) and ``{"message": ...}`` in the body,
so the client raises ``ClientError`` with ``Error.Code`` = the code and ``Error.Message`` = the message.

With ``server.batch = FakeBedrockBatch(...)`` (bedrock_batch.py) it also serves CreateModelInvocationJob,
GetModelInvocationJob and StopModelInvocationJob (``/model-invocation-job...``).

Converse speaks ``toolConfig``: a request that offers tools is answered with a ``toolUse`` block whose input
follows the chosen tool's ``inputSchema`` (``stopReason: "tool_use"``), on models that support tool use; others
answer 400 ValidationException as Bedrock does, and ``toolChoice.tool`` is refused outside the families that
take it (Anthropic, Amazon Nova, Mistral). Without tools, a JSON schema written in the prompt (after
``... validates against this JSON schema:\n``) is followed by the reply.

Faults, one per request in order: ``server.inject("throttling")`` or ``server.inject("too_long",
times=None)`` (every request until ``server.clear()``); see FAULTS, plus ``slow`` (answer after
``slow_seconds``) and ``drop`` (close the connection without a response).

Run standalone: ``python -m tests.fakes.bedrock_server --port 8001``
"""
from __future__ import annotations

import argparse
import json
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.openai_server import digest, sample_from_schema, schema_in_prompt

# name -> (HTTP status, x-amzn-ErrorType, message), statuses and messages as Bedrock sends them
FAULTS: dict[str, tuple[int, str, str]] = {
    "throttling": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "service_unavailable": (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
    "model_timeout": (408, "ModelTimeoutException",
                      "Model has timed out in processing the request. Try your request again."),
    "internal": (500, "InternalServerException", "The server encountered an internal error."),
    "too_long": (400, "ValidationException", "Input is too long for requested model."),
    "validation": (400, "ValidationException", "Malformed input request: #/temperature: 3.0 is not less "
                                                "or equal to 1.0, please reformat your input and try again."),
    "not_found": (404, "ResourceNotFoundException", "Model not found."),
    "access_denied": (403, "AccessDeniedException",
                      "You don't have access to the model with the specified model ID."),
    "unrecognized_client": (403, "UnrecognizedClientException",
                            "The security token included in the request is invalid."),
    "expired_token": (403, "ExpiredTokenException", "The security token included in the request is expired"),
}
ACTIONS = ("slow", "drop", "ok")  # non-HTTP-error faults; "ok" answers normally (a gap in a script)


@dataclass
class Fault:
    name: str
    message: str | None = None  # overrides the canned message (e.g. to echo a secret)
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers (e.g. Retry-After)


def foundation_model(model_id: str, provider: str, outputs: tuple[str, ...] = ("TEXT",)) -> dict[str, Any]:
    return {"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{model_id}", "modelId": model_id,
            "modelName": model_id.split(".", 1)[-1], "providerName": provider,
            "inputModalities": ["TEXT"], "outputModalities": list(outputs),
            "responseStreamingSupported": True, "customizationsSupported": [],
            "inferenceTypesSupported": ["ON_DEMAND"], "modelLifecycle": {"status": "ACTIVE"}}


def inference_profile(profile_id: str) -> dict[str, Any]:
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/{profile_id}"
    return {"inferenceProfileName": profile_id, "inferenceProfileArn": arn, "inferenceProfileId": profile_id,
            "models": [{"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{profile_id[3:]}"}],
            "status": "ACTIVE", "type": "SYSTEM_DEFINED"}


DEFAULT_MODELS = [
    foundation_model("anthropic.claude-3-haiku-20240307-v1:0", "Anthropic"),
    foundation_model("meta.llama3-8b-instruct-v1:0", "Meta"),
    foundation_model("mistral.mistral-7b-instruct-v0:2", "Mistral AI"),
    foundation_model("amazon.titan-embed-text-v2:0", "Amazon", ("EMBEDDING",)),
    foundation_model("stability.sd3-large-v1:0", "Stability AI", ("IMAGE",)),
]
DEFAULT_PROFILES = [inference_profile(p) for p in (
    "us.anthropic.claude-3-haiku-20240307-v1:0", "us.meta.llama3-2-1b-instruct-v1:0",
    "us.anthropic.claude-3-5-sonnet-20240620-v1:0")]


_GEO_PREFIXES = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"})  # inference profiles
NO_TOOL_MODELS = frozenset({"meta", "amazon.titan"})  # families (id prefixes) whose models refuse toolConfig
TOOL_CHOICE_FAMILIES = ("anthropic.", "amazon.nova", "mistral.")  # the only ones that take toolChoice.tool


def bare_model_id(model_id: str) -> str:
    """``us.anthropic.claude-...`` / ``arn:...:foundation-model/mistral.x`` -> ``anthropic.claude-...`` / ``mistral.x``."""
    bare = model_id.rsplit("/", 1)[-1]
    parts = bare.split(".")
    return ".".join(parts[1:]) if len(parts) > 2 and parts[0] in _GEO_PREFIXES else bare


def chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The toolSpec a Converse request makes the model use: the one toolChoice.tool names, else the first."""
    config = body.get("toolConfig") or {}
    specs = [t["toolSpec"] for t in config.get("tools") or [] if isinstance(t, dict) and "toolSpec" in t]
    name = ((config.get("toolChoice") or {}).get("tool") or {}).get("name")
    if name is not None:
        return next((t for t in specs if t.get("name") == name), None)
    return specs[0] if specs else None


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a Converse request asks its reply to follow: the chosen tool's input schema, else
    the schema written in the system blocks or the messages."""
    tool = chosen_tool(body)
    if tool is not None:
        schema = (tool.get("inputSchema") or {}).get("json")
        return schema if isinstance(schema, dict) else None
    texts = [b.get("text", "") for b in body.get("system", [])] + [
        b.get("text", "") for m in body.get("messages", []) for b in m.get("content", [])]
    return schema_in_prompt(texts)


def _validates(value: Any, schema: dict[str, Any]) -> bool:
    try:
        import jsonschema
    except ImportError:  # the fake must not need it: without it, the schema's own sample is used
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def default_reply(body: dict[str, Any]) -> str:
    """Deterministic: JSON following the requested schema (``{"answer": <last user text>}`` when that already
    follows it, so a reply names its prompt), ``{"answer": ...}`` when the system prompt asks for JSON
    without a schema, else an echo."""
    user = [b.get("text", "") for m in body.get("messages", []) if m.get("role") == "user"
            for b in m.get("content", [])]
    last = user[-1] if user else ""
    system = " ".join(b.get("text", "") for b in body.get("system", []))
    schema = requested_schema(body)
    if schema is not None:
        answer = {"answer": last}
        if _validates(answer, schema):
            return json.dumps(answer)
        return json.dumps(sample_from_schema(schema, digest(json.dumps(body.get("messages", []), sort_keys=True))))
    return json.dumps({"answer": last}) if "JSON" in system else f"echo: {last}"


class FakeBedrockServer:
    """``with FakeBedrockServer() as server:``; ``server.url`` is the ``endpoint_url`` / ``base_url``."""

    def __init__(self, *, access_key: str | None = None, latency: float = 0.0, slow_seconds: float = 2.0,
                 reply: Callable[[dict[str, Any]], str] | None = None, profile_page_size: int = 2,
                 no_tool_models: set[str] | frozenset[str] = NO_TOOL_MODELS, port: int = 0,
                 reasoning: Callable[[dict[str, Any]], str | None] | None = None):
        self.access_key = access_key
        # model ids, or prefixes of them up to a "." or "-" (families: "meta", "amazon.titan"), that refuse tools
        self.no_tool_models = set(no_tool_models)  # when set, any other access key id gets UnrecognizedClientException
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.reply = reply or default_reply
        self.reasoning = reasoning  # body -> a reasoningContent block before the reply (extended thinking)
        self.profile_page_size = profile_page_size
        self.foundation_models = list(DEFAULT_MODELS)
        self.inference_profiles = list(DEFAULT_PROFILES)
        self.script: deque[Fault] = deque()  # one fault per request, in order
        self.sticky: Fault | None = None  # a fault for every request after the script runs out
        self.requests: list[dict[str, Any]] = []  # every request: operation, model_id, headers, query, body
        self.batch: Any = None  # a bedrock_batch.FakeBedrockBatch serves the model invocation job routes
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- configuration -------------------------------------------------------------------------
    def inject(self, name: str, times: int | None = 1, *, message: str | None = None,
               headers: dict[str, str] | None = None) -> None:
        """Fail the next ``times`` requests with fault ``name``; ``times=None``: every request."""
        assert name in FAULTS or name in ACTIONS, f"unknown fault {name!r}"
        fault = Fault(name, message, dict(headers or {}))
        if times is None:
            self.sticky = fault
        else:
            self.script.extend([fault] * times)

    def clear(self) -> None:
        self.script.clear()
        self.sticky = None

    def converse_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["operation"] == "Converse"]

    def supports_tools(self, model_id: str) -> bool:
        bare = bare_model_id(model_id)
        return not any(model_id == p or bare == p or bare.startswith((f"{p}.", f"{p}-"))
                       for p in self.no_tool_models)

    def tool_refusal(self, model_id: str, body: dict[str, Any]) -> str | None:
        """The ValidationException message Bedrock answers this toolConfig with on this model, or None."""
        config = body.get("toolConfig")
        if not config:
            return None
        if not self.supports_tools(model_id):
            return "This model doesn't support tool use."
        if "tool" in (config.get("toolChoice") or {}) and not bare_model_id(model_id).startswith(
                TOOL_CHOICE_FAMILIES):
            return "This model doesn't support the toolChoice.tool field. Remove toolChoice.tool and try again."
        return None

    def _next_fault(self) -> Fault | None:
        try:
            fault = self.script.popleft()
        except IndexError:
            fault = self.sticky
        return None if fault is None or fault.name == "ok" else fault

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "FakeBedrockServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", self._port), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)
            self._httpd = None


def converse_response(fake: "FakeBedrockServer", body: dict[str, Any]) -> dict[str, Any]:
    """The Converse response body the fake answers ``body`` with (also a batch job's modelOutput: bedrock_batch.py)."""
    reply = fake.reply(body)
    words = reply.split(" ")
    max_tokens = body.get("inferenceConfig", {}).get("maxTokens") or len(words)
    stop = "max_tokens" if len(words) > max_tokens else "end_turn"
    text = " ".join(words[:max_tokens])
    content: list[dict[str, Any]] = [{"text": text}]
    tool = chosen_tool(body)
    try:
        tool_input = json.loads(reply) if tool is not None else None
    except json.JSONDecodeError:
        tool_input = None  # a reply that is no JSON object: the model answered in prose instead
    if isinstance(tool_input, dict):
        # a tool input cut at maxTokens never closed: Bedrock hands back no usable input
        tool_input, stop = ({}, stop) if stop == "max_tokens" else (tool_input, "tool_use")
        content = [{"toolUse": {"toolUseId": f"tooluse_{digest(reply)}", "name": tool.get("name"),
                                "input": tool_input}}]
    thought = fake.reasoning(body) if fake.reasoning is not None else None
    if thought is not None:
        content.insert(0, {"reasoningContent": {"reasoningText": {"text": thought, "signature": digest(thought)}}})
    prompt = [b.get("text", "") for b in body.get("system", [])] + [
        b.get("text", "") for m in body.get("messages", []) for b in m.get("content", [])]
    tokens_in = sum(len(t.split()) for t in prompt)
    tokens_out = min(len(words), max_tokens)
    return {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": {"inputTokens": tokens_in, "outputTokens": tokens_out,
                      "totalTokens": tokens_in + tokens_out},
            "metrics": {"latencyMs": int(fake.latency * 1000)}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a "slow" request must not hold up stop()
    request_queue_size = 1024  # the default listen backlog (5) drops bursts of connects: 1 s SYN retries


_SIGV4 = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/\d{8}/[^/]+/bedrock/aws4_request, "
                    r"SignedHeaders=[^,]+, Signature=[0-9a-f]{64}$")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeBedrockServer
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.fake
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = parsed.path.split("/")  # modelId is one percent-encoded segment: decode after splitting
        if self.command == "POST" and len(parts) == 4 and parts[1] == "model" and parts[3] == "converse":
            operation, model_id = "Converse", urllib.parse.unquote(parts[2])
        elif self.command == "GET" and parsed.path == "/foundation-models":
            operation, model_id = "ListFoundationModels", None
        elif self.command == "GET" and parsed.path == "/inference-profiles":
            operation, model_id = "ListInferenceProfiles", None
        elif fake.batch is not None and parts[1:2] == ["model-invocation-job"]:
            operation, model_id = fake.batch.operation(self.command, parts), None
        else:
            operation, model_id = None, None
        body = json.loads(raw) if raw else None
        fake.requests.append({"operation": operation, "model_id": model_id, "path": parsed.path,
                              "query": query, "headers": dict(self.headers.items()), "body": body})
        match = _SIGV4.match(self.headers.get("Authorization", ""))
        if match is None:
            return self._error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        if fake.access_key is not None and match.group(1) != fake.access_key:
            return self._error(403, *FAULTS["unrecognized_client"][1:])
        if operation is None:
            return self._error(404, "UnknownOperationException", f"no route for {self.command} {parsed.path}")
        fault = fake._next_fault()
        if fake.latency:
            time.sleep(fake.latency)
        if fault is not None and fault.name == "drop":
            self.close_connection = True
            return None
        if fault is not None and fault.name == "slow":
            time.sleep(fake.slow_seconds)
        elif fault is not None:
            status, code, message = FAULTS[fault.name]
            return self._error(status, code, fault.message or message, fault.headers)
        if operation == "Converse":
            if (refusal := fake.tool_refusal(model_id, body or {})) is not None:
                return self._error(400, "ValidationException", refusal)
            return self._send(200, converse_response(fake, body or {}))
        if fake.batch is not None and operation in fake.batch.OPERATIONS:
            status, payload, code = fake.batch.handle(operation, parts, body or {})
            return self._error(status, code, payload["message"]) if code else self._send(status, payload)
        if operation == "ListFoundationModels":
            return self._send(200, {"modelSummaries": fake.foundation_models})
        start = int(query.get("nextToken") or 0)
        end = start + int(query.get("maxResults") or fake.profile_page_size)
        page: dict[str, Any] = {"inferenceProfileSummaries": fake.inference_profiles[start:end]}
        if end < len(fake.inference_profiles):
            page["nextToken"] = str(end)
        return self._send(200, page)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        extra = {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
        self._send(status, {"message": message}, {**extra, **(headers or {})})

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", f"fake-{len(self.fake.requests)}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeBedrockServer(latency=args.latency, port=args.port)
    server.start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
