"""OpenAI, any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, LM Studio), and Cloudera AI
Inference — one wire protocol, three ways to find the endpoint and the credential.

All three use the official ``openai`` async client with its own retries off: the engine retries, with
backoff that honours Retry-After and adapts concurrency, so a second retry layer would only hide 429s.
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from ..config import ModelSpec
from ..errors import ConfigError
from .base import BaseProvider, ChatRequest, Completion, ProviderError, Usage

CLIENT_TIMEOUT_S = 600.0  # the engine applies the per-request timeout; this only bounds a hung socket
CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "too many tokens")


class OpenAICompatibleProvider(BaseProvider):
    """Any server speaking ``/v1/chat/completions``; an optional key from an env var the user names."""

    name: ClassVar[str] = "openai_compatible"
    supports_json_schema: ClassVar[bool] = True
    max_tokens_field: ClassVar[str] = "max_tokens"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.base_url = self.endpoint()
        self.model = spec.model or self.default_model()
        self._api_key = self.credential()
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- where and who ---------------------------------------------------------------------------
    def endpoint(self) -> str | None:
        if not self.spec.base_url:
            raise ConfigError(f"provider {self.name} needs base_url (e.g. http://localhost:8000/v1)")
        return self.spec.base_url

    def default_model(self) -> str:
        raise ConfigError(f"provider {self.name} needs a model id (`sdstudio models --provider "
                          f"{self.name} --base-url ...` lists them)")

    def credential(self) -> str:
        if self.spec.api_key_env:
            key = self.secret_from_env(self.spec.api_key_env)
            if not key:
                raise ConfigError(f"environment variable {self.spec.api_key_env} (api_key_env) is not set")
            return key
        return "no-key"  # local servers ignore it; the client insists on one

    def client(self):
        """One client per event loop: an httpx pool must not be shared across loops."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(api_key=self._api_key, base_url=self.base_url, max_retries=0,
                                       timeout=CLIENT_TIMEOUT_S)
            self._client_loop = loop
        return self._client

    # -- calls -----------------------------------------------------------------------------------
    def request_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        params = self.parameters(request.parameters)
        kwargs: dict[str, Any] = {"model": self.model, "messages": self.messages_for(request)}
        extra: dict[str, Any] = {}
        for name, value in params.items():
            if name == "max_tokens":
                kwargs[self.max_tokens_field] = value
            elif name == "top_k":
                extra["top_k"] = value  # vLLM, llama.cpp server and Ollama read it from the body
            else:
                kwargs[name] = value
        if extra:
            kwargs["extra_body"] = extra
        if request.json_schema is not None:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": request.json_schema}}
        return kwargs

    async def complete(self, request: ChatRequest) -> Completion:
        import openai

        started = time.perf_counter()
        try:
            response = await self.client().chat.completions.create(**self.request_kwargs(request))
            choice = response.choices[0]
            text = choice.message.content or ""
            usage = response.usage
        except openai.APIError as exc:
            raise self.map_error(exc) from None
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise self.error("transient", f"malformed response from {self.base_url or 'OpenAI'} "
                                          f"({type(exc).__name__})") from None
        return Completion(
            text=text, parsed=self.parse_json(text, request),
            usage=Usage(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=choice.finish_reason, latency_ms=(time.perf_counter() - started) * 1000)

    async def list_models(self) -> list[str]:
        import openai

        try:
            page = await self.client().models.list()
            return sorted(m.id for m in page.data)
        except openai.APIError as exc:
            raise self.map_error(exc) from None

    async def aclose(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None

    # -- errors ----------------------------------------------------------------------------------
    def map_error(self, exc: Exception) -> ProviderError:
        import openai

        where = self.base_url or "api.openai.com"
        status = getattr(exc, "status_code", None)
        detail = _error_detail(exc)
        if isinstance(exc, openai.APITimeoutError):
            return self.error("transient", f"request to {where} timed out")
        if isinstance(exc, openai.APIConnectionError):
            return self.error("transient", f"connection to {where} failed ({_cause(exc)})")
        if isinstance(exc, openai.RateLimitError):
            return self.error("rate_limited", f"rate limited by {where}: {detail}",
                              retry_after=_retry_after(exc), status=429)
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return self.error("auth", f"{where} refused the credentials ({status}): {detail}", status=status)
        if status is not None and status >= 500 or status in (408, 409):
            return self.error("transient", f"{where} answered {status}: {detail}", status=status)
        if any(marker in detail.lower() for marker in CONTEXT_MARKERS):
            return self.error("context_length", f"prompt too long for {self.model}: {detail}", status=status)
        if isinstance(exc, openai.NotFoundError):
            return self.error("bad_request", f"{where} does not know model {self.model!r} or the path "
                                             f"({detail})", status=status)
        if isinstance(exc, openai.APIResponseValidationError) or status is None:
            return self.error("transient", f"malformed response from {where}: {detail}")
        return self.error("bad_request", f"{where} rejected the request ({status}): {detail}", status=status)


class OpenAIProvider(OpenAICompatibleProvider):
    """api.openai.com (or ``base_url`` to reach a proxy); the key from ``OPENAI_API_KEY``."""

    name: ClassVar[str] = "openai"
    max_tokens_field: ClassVar[str] = "max_completion_tokens"
    supported_parameters = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed"})

    def endpoint(self) -> str | None:
        return self.spec.base_url

    def default_model(self) -> str:
        return "gpt-4o-mini"

    def credential(self) -> str:
        variable = self.spec.api_key_env or "OPENAI_API_KEY"
        key = self.secret_from_env(variable)
        if not key:
            raise ConfigError(f"{variable} is not set; export your OpenAI API key in it")
        return key


class CaiiProvider(OpenAICompatibleProvider):
    """Cloudera AI Inference: an OpenAI-compatible endpoint; token from ``CDP_TOKEN`` or the session's
    ``/tmp/jwt`` file (``access_token``)."""

    name: ClassVar[str] = "caii"
    jwt_path: ClassVar[str] = "/tmp/jwt"

    def credential(self) -> str:
        token = self.secret_from_env(self.spec.api_key_env or "CDP_TOKEN")
        if token:
            return token
        path = Path(os.environ.get("SDSTUDIO_CAII_JWT_FILE", self.jwt_path))
        try:
            token = json.loads(path.read_text())["access_token"]
        except FileNotFoundError:
            raise ConfigError(f"no Cloudera AI token: set CDP_TOKEN or run inside a Cloudera AI session "
                              f"(which provides {path})") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{path} does not hold a JSON object with an access_token") from None
        self._secrets.append(token)
        return token


def _error_detail(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body["error"] if isinstance(body.get("error"), dict) else body
        message, code = inner.get("message"), inner.get("code")
        if message:
            return f"{message} [{code}]" if code else str(message)
    return " ".join(str(getattr(exc, "message", exc)).split())[:300]


def _cause(exc: Exception) -> str:
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause else "connection error"


def _retry_after(exc: Exception) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(when.timestamp() - time.time(), 0.0) if when else None
