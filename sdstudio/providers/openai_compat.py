"""OpenAI, any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, LM Studio), and Cloudera AI
Inference — one wire protocol, three ways to find the endpoint and the credential.

``openai`` uses the official async client. OpenAI-compatible servers and Cloudera AI Inference go
through a lean aiohttp transport: the official client's connection pool and request transforms cost
~3.5 ms of CPU per request, which at concurrency 64 makes the client, not the server, the bottleneck
(see benchmarks/engine.py). Retries are off in both: the engine retries, honouring Retry-After and
adapting concurrency, so a second retry layer would only hide 429s.

Credentials written into ``base_url`` come back from ``urlsecrets`` (the config only holds the masked form):
``user:password`` becomes an HTTP Basic ``Authorization`` header, which is refused when the provider also sends
a key (a request has one ``Authorization`` header; sending one would silently drop the other), and query
parameters go on every request (``default_query`` of the ``openai`` client, ``params`` of aiohttp) instead of
in front of ``/chat/completions``. Messages name the endpoint by its masked form.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ..config import ModelSpec
from ..errors import ConfigError
from ..urlsecrets import EndpointUrl, reveal
from .base import BaseProvider, ChatRequest, Completion, ProviderError, Usage
from .replies import reply_reasoning, reply_text
from .structured import DIALECTS, DialectRejected, is_validation_error, openai_fields, rejects

CLIENT_TIMEOUT_S = 600.0  # the engine applies the per-request timeout; this only bounds a hung socket
CONNECT_TIMEOUT_S = 30.0  # a host that drops packets is unreachable, not slow: say so long before the request timeout
CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "too many tokens")


class OpenAICompatibleProvider(BaseProvider):
    """Any server speaking ``/v1/chat/completions``; an optional key from an env var the user names."""

    name: ClassVar[str] = "openai_compatible"
    # OpenAI / recent vLLM, LM Studio, Ollama; llama-cpp-python's server; older vLLM; then the prompt
    structured_chain: ClassVar[tuple[str, ...]] = ("json_schema", "json_object", "guided_json", "prompt")
    structured_dialects: ClassVar[frozenset[str]] = frozenset(DIALECTS)
    max_tokens_field: ClassVar[str] = "max_tokens"
    ui_fields: ClassVar[tuple[str, ...]] = ("model", "base_url", "api_key_env")
    # /v1/files + /v1/batches in OpenAI's format (vLLM's batch runner reads the same files); no discount known
    batch_backend: ClassVar[str | None] = "sdstudio.executors.batch_openai:OpenAIBatch"

    @classmethod
    def status(cls) -> str:
        return "any base URL (set it in a notebook)"

    client_modules: ClassVar[tuple[str, ...]] = ("aiohttp",)

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.url = EndpointUrl(url="", shown="")  # set by endpoint(): where, and the URL's own credentials
        self.base_url = self.endpoint()
        self.model = spec.model or self.default_model()
        self._api_key = self.credential()
        if self.url.has_userinfo and self._api_key:
            raise ConfigError(f"base_url {self.url.shown} carries user:password (HTTP Basic auth), but provider "
                              f"{self.name} also sends a key in the Authorization header and a request has only one; "
                              f"remove user:password from the URL, or use provider openai_compatible without "
                              f"api_key_env for a server behind Basic auth")
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- where and who ---------------------------------------------------------------------------
    def endpoint(self) -> str | None:
        if not self.spec.base_url:
            raise ConfigError(f"provider {self.name} needs base_url (e.g. http://localhost:8000/v1)")
        return self.reveal_url()

    def reveal_url(self) -> str:
        """The request URL of ``spec.base_url``; its credentials (back from memory) go to ``self.url`` and are
        masked in every message and log record."""
        self.url = reveal(self.spec.base_url or "")
        for secret in (self.url.password, self.url.basic_authorization(), *self.url.query_params().values()):
            if secret and len(secret) >= 8:  # shorter ones: masked where a URL puts them (redact.py says why)
                self.add_secret(secret)
        return checked_url(self.url.url, self.url.shown)

    @property
    def where(self) -> str:
        """The endpoint as messages name it: masked, never the URL's credentials."""
        return self.url.shown.rstrip("/") or "api.openai.com"

    def default_model(self) -> str:
        return ""  # listing models needs none; a call without one fails as a bad request, naming the fix

    def credential(self) -> str | None:
        if self.spec.api_key_env:
            key = self.secret_from_env(self.spec.api_key_env)
            if not key:
                raise ConfigError(f"environment variable {self.spec.api_key_env} (api_key_env) is not set")
            return key
        return None

    def client(self):
        """One HTTP session per event loop: a connection pool must not be shared across loops."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self.make_client()
            self._client_loop = loop
        return self._client

    def make_client(self):
        import aiohttp

        authorization = f"Bearer {self._api_key}" if self._api_key else self.url.basic_authorization()
        headers = {"Authorization": authorization} if authorization else {}
        return aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S),
            raise_for_status=False)

    # -- calls -----------------------------------------------------------------------------------
    def endpoint_key(self) -> str:
        return self.where

    def request_body(self, request: ChatRequest, dialect: str | None = None) -> dict[str, Any]:
        """The JSON body of one chat request; ``dialect`` says how a schema is asked for (structured.py)."""
        body: dict[str, Any] = {"model": self.model, "messages": self.messages_for(request, dialect)}
        for name, value in self.parameters(request.parameters).items():
            body[self.max_tokens_field if name == "max_tokens" else name] = value
        if request.json_schema is not None:
            body.update(openai_fields(dialect or self.negotiation().dialect, request.json_schema))
        return body

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import aiohttp

        url = f"{self.base_url}{path}"
        try:
            async with self.client().request(method, url, json=body, params=self.url.query or None) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise self.classify(response.status, _detail_from_body(raw), response.headers)
                return json.loads(raw)
        except ProviderError:
            raise
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise self.error("transient", f"connection to {self.where} broke mid-reply "
                                          f"({type(exc).__name__})") from None
        except (aiohttp.ClientError, OSError) as exc:
            unreachable = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                                           aiohttp.InvalidURL))
            raise self.error("transient", f"connection to {self.where} failed ({type(exc).__name__})",
                             unreachable=unreachable) from None
        except ValueError:
            raise self.error("transient", f"malformed response from {self.where} (not JSON)") from None

    async def complete(self, request: ChatRequest) -> Completion:
        if not self.model:
            raise self.error("bad_request", f"no model id; set model (`sdstudio models --provider {self.name} "
                                            "--base-url ...` lists them)")
        if request.json_schema is None:
            return await self.complete_in(request, None)
        return await self.negotiation().send(lambda dialect: self.complete_in(request, dialect))

    async def complete_in(self, request: ChatRequest, dialect: str | None) -> Completion:
        """One request, the schema asked for in ``dialect``; a refusal of the dialect's field raises
        ``DialectRejected`` so the negotiation moves on."""
        started = time.perf_counter()
        try:
            data = await self._call("POST", "/chat/completions", self.request_body(request, dialect))
        except ProviderError as exc:
            raise self.refused(exc, dialect) from None
        return self.completion_from(data, request, dialect, (time.perf_counter() - started) * 1000)

    def completion_from(self, data: Any, request: ChatRequest, dialect: str | None, latency_ms: float = 0.0
                        ) -> Completion:
        """A chat.completion body (JSON) as a Completion: the one parse of a reply, on demand or in a batch's
        output file (executors/batch_openai.py), so both give the same records."""
        try:
            choice = data["choices"][0]
            text = reply_text(choice["message"], dialect)
            usage = data.get("usage") or {}
            tokens = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise self.error("transient", f"malformed response from {self.where} (no choices)") from None
        return Completion(text=text, parsed=self.parse_json(text, request), usage=tokens,
                          finish_reason=choice.get("finish_reason"), latency_ms=latency_ms,
                          model=data.get("model") or None, reasoning=reply_reasoning(choice["message"]))

    @staticmethod
    def refused(exc: ProviderError, dialect: str | None) -> Exception:
        """``exc``, or ``DialectRejected`` when it says the server does not take ``dialect``'s field."""
        return DialectRejected(exc) if dialect and rejects(dialect, exc.status, str(exc)) else exc

    async def list_models(self) -> list[str]:
        data = await self._call("GET", "/models")
        try:
            return sorted(m["id"] for m in data["data"])
        except (KeyError, TypeError):
            raise self.error("transient", f"malformed model list from {self.where}") from None

    async def aclose(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None

    # -- errors ----------------------------------------------------------------------------------
    def classify(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> ProviderError:
        """HTTP status + error text -> the engine's error kinds."""
        where = self.where
        if status == 429:
            return self.error("rate_limited", f"rate limited by {where}: {detail}",
                              retry_after=retry_after_seconds(headers or {}), status=status)
        if status in (401, 403):
            return self.error("auth", f"{where} refused the credentials ({status}): {detail}", status=status)
        if status >= 500 and is_validation_error(detail):  # llama-cpp-python answers a bad request with a 500
            return self.error("bad_request", f"{where} rejected the request ({status}): {detail}", status=status)
        if status >= 500 or status in (408, 409):
            return self.error("transient", f"{where} answered {status}: {detail}", status=status)
        if any(marker in detail.lower() for marker in CONTEXT_MARKERS):
            return self.error("context_length", f"prompt too long for {self.model}: {detail}", status=status)
        if status == 404:
            return self.error("bad_request", f"{where} does not know model {self.model!r} or the path "
                                             f"({detail})", status=status)
        return self.error("bad_request", f"{where} rejected the request ({status}): {detail}", status=status)


class OpenAIProvider(OpenAICompatibleProvider):
    """api.openai.com (or ``base_url`` to reach a proxy) through the official ``openai`` client; the key
    from ``OPENAI_API_KEY``."""

    name: ClassVar[str] = "openai"
    structured_chain: ClassVar[tuple[str, ...]] = ("json_schema", "json_object", "prompt")
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    supported_parameters = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed"})
    key_env: ClassVar[str | None] = "OPENAI_API_KEY"
    needs_key: ClassVar[bool] = True
    batch_discount: ClassVar[float] = 0.5  # the Batch API costs half of on-demand (openai.com/api/pricing)

    @classmethod
    def status(cls) -> str:  # only the key is needed; base_url (a proxy) is optional
        return f"{cls.key_env} set" if os.environ.get(cls.key_env or "") else ""

    def endpoint(self) -> str | None:
        return self.reveal_url() if self.spec.base_url else None

    def default_model(self) -> str:
        return "gpt-4o-mini"

    def credential(self) -> str:
        variable = self.spec.api_key_env or self.key_env
        key = self.secret_from_env(variable)
        if not key:
            raise ConfigError(f"{variable} is not set; export your OpenAI API key in it")
        return key

    def make_client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0, timeout=CLIENT_TIMEOUT_S,
                           default_query=self.url.query_params() or None)

    async def complete_in(self, request: ChatRequest, dialect: str | None) -> Completion:
        import openai

        started = time.perf_counter()
        try:
            response = await self.client().chat.completions.create(**self.request_body(request, dialect))
            data = response.model_dump()
        except openai.APIError as exc:
            raise self.refused(self.map_error(exc), dialect) from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise self.error("transient", f"malformed response from {self.where} "
                                          f"({type(exc).__name__})") from None
        return self.completion_from(data, request, dialect, (time.perf_counter() - started) * 1000)

    async def list_models(self) -> list[str]:
        import openai

        try:
            page = await self.client().models.list()
            return sorted(m.id for m in page.data)
        except openai.APIError as exc:
            raise self.map_error(exc) from None

    def map_error(self, exc: Exception) -> ProviderError:
        import openai

        where = self.where
        if isinstance(exc, openai.APITimeoutError):
            return self.error("transient", f"request to {where} timed out")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc.__context__
            return self.error("transient", f"connection to {where} failed "
                                           f"({type(cause).__name__ if cause else 'connection error'})",
                              unreachable=type(cause).__name__ in ("ConnectError", "ConnectTimeout",
                                                                   "UnsupportedProtocol"))
        status = getattr(exc, "status_code", None)
        if status is None:  # a 200 whose body is not a completion
            return self.error("transient", f"malformed response from {where}: {_error_detail(exc)}")
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        return self.classify(status, _error_detail(exc), headers)


def checked_url(url: str, shown: str | None = None) -> str:
    """base_url without its trailing slash; not an http(s) URL is a config error, not 1000 failed requests.
    ``shown`` is how the message names it (the masked form, when the URL carried credentials)."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"base_url {(shown or url).strip().rstrip('/')!r} is not an http(s) URL; write it in full, "
                          f"e.g. http://localhost:8000/v1")
    return url


def _detail_from_body(raw: bytes) -> str:
    """The error message (and code) of an OpenAI-style error body, else the start of the body."""
    try:
        body = json.loads(raw)
    except ValueError:
        return " ".join(raw[:300].decode("utf-8", "replace").split()) or "(empty body)"
    return _message_and_code(body) or " ".join(str(body).split())[:300]


def _message_and_code(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    inner = body["error"] if isinstance(body.get("error"), dict) else body
    message, code = inner.get("message"), inner.get("code")
    if not message:
        return None
    message = " ".join(str(message).split())  # one line: llama-cpp-python sends a pydantic error with a traceback
    return f"{message} [{code}]" if code else message


def _error_detail(exc: Exception) -> str:
    return _message_and_code(getattr(exc, "body", None)) or " ".join(str(getattr(exc, "message", exc)).split())[:300]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            return None
