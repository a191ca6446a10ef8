"""AWS Bedrock through the Converse API: one request shape for every Bedrock chat model.

boto3 is synchronous, so calls run on a dedicated thread pool (a botocore client is thread-safe; a
boto3 Session is not, so clients are built once, under a lock, and then shared). botocore's own retries are
off: the engine retries with its own budget and rate limits, and two retry layers would multiply.
boto3 is imported lazily so that choosing another provider never pays for it.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from ..config import ModelSpec
from ..errors import ConfigError
from ..urlsecrets import reveal
from .base import BaseProvider, ChatRequest, CheckResult, Completion, ErrorKind, ProviderError, Usage
from .structured import TOOL_NAME, DialectRejected, rejects

# Families whose Converse ``additionalModelRequestFields`` take ``{"top_k": k}``; others drop it.
TOP_K_FAMILIES = frozenset({"anthropic", "mistral"})
_GEO_PREFIXES = frozenset({"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"})  # inference profiles

_RATE_LIMITED = frozenset({"ThrottlingException", "TooManyRequestsException"})
_TRANSIENT = frozenset({"ServiceUnavailableException", "ModelTimeoutException", "InternalServerException",
                        "ModelNotReadyException", "ModelErrorException", "InternalFailure"})
_AUTH = frozenset({"AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException",
                   "InvalidSignatureException", "IncompleteSignatureException",
                   "MissingAuthenticationTokenException", "ExpiredToken", "InvalidClientTokenId"})
_TOO_LONG = re.compile(r"too long|too many (?:input )?tokens|context (?:length|window|limit)|"
                       r"input (?:token|length)|prompt is too long", re.IGNORECASE)


def model_family(model_id: str) -> str:
    """``us.anthropic.claude-...`` / ``arn:...:foundation-model/mistral.x`` -> ``anthropic`` / ``mistral``."""
    parts = model_id.rsplit("/", 1)[-1].split(".")
    if len(parts) > 2 and parts[0] in _GEO_PREFIXES:
        parts = parts[1:]
    return parts[0] if len(parts) > 1 else ""


class BedrockProvider(BaseProvider):
    """Bedrock Converse. Region and credentials come from the standard AWS chain (env, profile, role);
    ``spec.base_url`` overrides the endpoint (VPC endpoints, tests).

    Every request is signed with AWS credentials (SigV4), so a ``base_url`` carrying user:password or a query
    is refused: botocore would drop or mis-sign them, and they are not how Bedrock authenticates."""

    name = "bedrock"
    # Converse has no schema field: a forced tool whose input schema is the item schema gives schema-shaped
    # output on models with tool use; the others get the schema in the prompt
    structured_chain = ("tool", "prompt")
    structured_dialects = frozenset(structured_chain)
    # batch inference (CreateModelInvocationJob): S3 in, S3 out, about half the on-demand price (README)
    batch_backend: ClassVar[str | None] = "sdstudio.executors.batch_bedrock:BedrockBatch"
    batch_discount: ClassVar[float] = 0.5  # "50% lower price than on-demand" for the models batch inference serves
    ui_fields = ("model", "region")
    key_env = None  # credentials come from the AWS chain (env, profile, role), never from api_key_env
    secret_env = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK",
                  "AWS_REGION", "AWS_DEFAULT_REGION")
    needs_key = False
    max_concurrency = None
    pool_size = 64
    connect_timeout_s = 10.0
    read_timeout_s = 300.0  # long generations are legitimate; the engine enforces its own deadline

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.model = spec.model or ""
        self.endpoint_url = self._endpoint_url()
        family = model_family(self.model)
        # seed: Converse has no such field; top_k: only via model-specific request fields
        supported = {"temperature", "top_p", "max_tokens", "stop"} | ({"top_k"} if family in TOP_K_FAMILIES else set())
        self.supported_parameters = frozenset(supported)  # type: ignore[misc]  # per instance, by family
        for variable in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK"):
            self.secret_from_env(variable)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def _endpoint_url(self) -> str | None:
        if not self.spec.base_url:
            return None
        url = reveal(self.spec.base_url)
        if url.has_secrets:
            raise ConfigError(f"base_url {url.shown} carries user:password or a ?query, but Bedrock signs every "
                              "request with AWS credentials; remove them and give the credentials through AWS_PROFILE "
                              "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        return url.url

    @classmethod
    def status(cls) -> str:
        configured = os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")
        return "AWS credentials in environment" if configured else ""

    # -- plumbing --------------------------------------------------------------------------------
    def _client(self, service: str) -> Any:
        """Build each client once, on first use (in a worker thread: building one takes ~100 ms)."""
        with self._lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                config = Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                max_pool_connections=self.pool_size, connect_timeout=self.connect_timeout_s,
                                read_timeout=self.read_timeout_s)
                session = boto3.session.Session(region_name=self.spec.region or None)
                credentials = session.get_credentials()  # env, profile or role: mask what botocore logs
                if credentials is not None:
                    frozen = credentials.get_frozen_credentials()
                    for secret in (frozen.secret_key, frozen.token):
                        if secret:
                            self.add_secret(secret)
                self._clients[service] = session.client(service, endpoint_url=self.endpoint_url,
                                                        config=config)
            return self._clients[service]

    async def _call(self, service: str, operation: str, **kwargs: Any) -> tuple[dict[str, Any], float]:
        """Run one API call off the event loop; return the response and its latency in ms."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.pool_size, thread_name_prefix="sdstudio-bedrock")

        def run() -> tuple[dict[str, Any], float]:
            client = self._client(service)
            started = time.perf_counter()
            response = getattr(client, operation)(**kwargs)
            return response, (time.perf_counter() - started) * 1000

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001 - every botocore failure becomes a ProviderError kind
            raise self._map_error(exc) from None

    def _map_error(self, exc: Exception) -> ProviderError:
        from botocore import exceptions as bx

        where = f"model {self.model!r}" if self.model else "Bedrock"
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "")
            meta = exc.response.get("ResponseMetadata", {})
            status = meta.get("HTTPStatusCode")
            text = " ".join(str(error.get("Message") or "").split()) or code
            kind = _kind_for(code, status, text)
            retry_after = _retry_after(meta.get("HTTPHeaders", {})) if kind == "rate_limited" else None
            hint = " (check the AWS credentials / IAM permissions)" if kind == "auth" else ""
            return self.error(kind, f"{where}: {code or status}: {text}{hint}", retry_after=retry_after,
                              status=status)
        one_line = " ".join(str(exc).split())
        if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError,
                            bx.ProfileNotFound)):
            return self.error("auth", f"{where}: no usable AWS credentials ({one_line}); set "
                                      "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
        if isinstance(exc, (bx.ConnectionError, bx.HTTPClientError)):
            unreachable = isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError))
            return self.error("transient", f"{where}: cannot reach Bedrock: {one_line}", unreachable=unreachable)
        if isinstance(exc, bx.NoRegionError):
            return self.error("bad_request", f"{where}: no AWS region; set region in the model spec "
                                             "or AWS_REGION")
        if isinstance(exc, bx.ParamValidationError):
            return self.error("bad_request", f"{where}: invalid request: {one_line}")
        return self.error("transient", f"{where}: {type(exc).__name__}: {one_line}")

    # -- provider API ----------------------------------------------------------------------------
    def endpoint_key(self) -> str:
        return self.endpoint_url or f"bedrock:{self.spec.region or os.environ.get('AWS_REGION', '')}"

    def converse_arguments(self, request: ChatRequest, dialect: str | None = None) -> dict[str, Any]:
        """The Converse keyword arguments for a request (system apart, same-role turns merged); with the tool
        dialect, one tool whose input schema is the request's schema, and the model made to call it."""
        system: list[dict[str, str]] = []
        messages: list[dict[str, Any]] = []
        for message in self.messages_for(request, dialect):
            block = {"text": message["content"]}
            if message["role"] == "system":
                system.append(block)
            elif messages and messages[-1]["role"] == message["role"]:
                messages[-1]["content"].append(block)  # Converse requires alternating roles
            else:
                messages.append({"role": message["role"], "content": [block]})
        params = self.parameters(request.parameters)
        names = {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP",
                 "stop": "stopSequences"}
        arguments: dict[str, Any] = {
            "modelId": self.model, "messages": messages,
            "inferenceConfig": {names[k]: v for k, v in params.items() if k in names}}
        if system:
            arguments["system"] = system
        if "top_k" in params:
            arguments["additionalModelRequestFields"] = {"top_k": params["top_k"]}
        if request.json_schema is not None and dialect == "tool":
            arguments["toolConfig"] = {
                "tools": [{"toolSpec": {"name": TOOL_NAME, "description": "Record the answer.",
                                        "inputSchema": {"json": request.json_schema}}}],
                "toolChoice": self.tool_choice()}
        return arguments

    def tool_choice(self) -> dict[str, Any]:
        """Naming the tool is only supported by Claude and Nova models; "any" forces the one tool elsewhere."""
        if model_family(self.model) == "anthropic" or ".nova-" in self.model:
            return {"tool": {"name": TOOL_NAME}}
        return {"any": {}}

    async def complete(self, request: ChatRequest) -> Completion:
        if not self.model:
            raise self.error("bad_request", "no model id; set model (a Bedrock model or profile id)")
        if request.json_schema is None:
            return await self.converse(request, None)
        return await self.negotiation().send(lambda dialect: self.converse(request, dialect))

    async def converse(self, request: ChatRequest, dialect: str | None) -> Completion:
        try:
            response, latency_ms = await self._call("bedrock-runtime", "converse",
                                                    **self.converse_arguments(request, dialect))
        except ProviderError as exc:
            if dialect and rejects(dialect, exc.status, str(exc)):
                raise DialectRejected(exc) from None
            raise
        return self.completion_from(response, request, dialect, latency_ms)

    def completion_from(self, response: dict[str, Any], request: ChatRequest, dialect: str | None,
                        latency_ms: float = 0.0) -> Completion:
        """The Completion of a Converse response body: the on-demand reply, and a batch job's ``modelOutput``
        (a Converse-type job writes the same body), so both give the handler the same text, usage and parse."""
        content = response.get("output", {}).get("message", {}).get("content", [])
        tool_input = next((block["toolUse"].get("input") for block in content if "toolUse" in block), None)
        if dialect == "tool" and tool_input is not None:
            text, parsed = json.dumps(tool_input, ensure_ascii=False), tool_input
        else:
            text = "".join(block["text"] for block in content if "text" in block)
            parsed = self.parse_json(text, request)
        usage = response.get("usage", {})
        return Completion(text=text, parsed=parsed,
                          usage=Usage(usage.get("inputTokens", 0), usage.get("outputTokens", 0)),
                          finish_reason=response.get("stopReason"), latency_ms=latency_ms,
                          reasoning=converse_reasoning(content))

    async def list_models(self) -> list[str]:
        """Text-output foundation models plus inference profiles (which many newer models require)."""
        found, _ = await self._call("bedrock", "list_foundation_models")
        models = [m["modelId"] for m in found.get("modelSummaries", [])
                  if "TEXT" in m.get("outputModalities", ["TEXT"])]
        token: str | None = None
        while True:
            page, _ = await self._call("bedrock", "list_inference_profiles",
                                       **({"nextToken": token} if token else {}))
            models += [p["inferenceProfileId"] for p in page.get("inferenceProfileSummaries", [])]
            token = page.get("nextToken")
            if not token:
                return list(dict.fromkeys(models))

    async def check(self) -> CheckResult:
        """List models; if listing is not permitted (IAM often grants only InvokeModel) or the model
        is an ARN that listings do not show, ask the model for one token instead."""
        result = await super().check()
        if result.ok or not (self.model.startswith("arn:") or "AccessDenied" in result.message):
            return result
        try:
            await self.complete(ChatRequest.of("ping", self.spec.parameters.model_copy(
                update={"max_tokens": 1, "top_k": None, "seed": None})))
        except ProviderError as exc:
            return CheckResult(False, str(exc))
        return CheckResult(True, f"{self.name}: ok (model {self.model!r} answers)")

    async def aclose(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _kind_for(code: str, status: int | None, message: str) -> ErrorKind:
    if code in _RATE_LIMITED or status == 429:
        return "rate_limited"
    if code in _TRANSIENT or (status or 0) >= 500 or status == 408:
        return "transient"
    if code in _AUTH or status in (401, 403):
        return "auth"
    if code == "ValidationException" and _TOO_LONG.search(message) or status == 413:
        return "context_length"
    return "bad_request"


def _retry_after(headers: dict[str, str]) -> float | None:
    """Seconds to wait: ``Retry-After`` (seconds) or AWS's ``x-amz-retry-after`` (milliseconds)."""
    for name, scale in (("retry-after", 1.0), ("x-amz-retry-after", 0.001)):
        try:
            return max(0.0, float(headers[name]) * scale)
        except (KeyError, TypeError, ValueError):
            continue
    return None


def converse_reasoning(content: list[dict[str, Any]]) -> str | None:
    """The text of a Converse reply's ``reasoningContent`` blocks (Claude's extended thinking, DeepSeek-R1...),
    in order; None when it has none. A redacted block (``redactedContent``, encrypted bytes) has no text to keep."""
    parts = [(block["reasoningContent"].get("reasoningText") or {}).get("text") or ""
             for block in content if isinstance(block.get("reasoningContent"), dict)]
    text = "".join(parts)
    return text if text.strip() else None
