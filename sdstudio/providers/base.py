"""The provider protocol: one small async interface every model backend implements.

The engine only sees ``ChatRequest -> Completion`` and a handful of error kinds, so it can decide
retry vs. fail without knowing which provider it talks to. Adding a provider is one module plus one
line in the registry (``providers/__init__.py``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from .. import redact
from ..config import ModelParameters, ModelSpec
from ..errors import ConfigError, SdstudioError
from ..pricing import Price, price_for
from .structured import SCHEMA_IN_PROMPT, Negotiation, with_schema_in_prompt

log = logging.getLogger("sdstudio.providers")

ErrorKind = Literal["rate_limited", "transient", "auth", "bad_request", "context_length"]
RETRYABLE_KINDS = frozenset({"rate_limited", "transient"})


class ProviderError(SdstudioError):
    """A provider call failed. ``kind`` tells the engine what to do; the message is for the user and
    never contains a credential."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: float | None = None,
                 status: int | None = None, unreachable: bool = False):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.status = status
        # no connection could be made (refused, unknown host, bad URL): when no request of a run has been
        # answered yet, the engine stops the run instead of failing every item the same way
        self.unreachable = unreachable

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def __reduce__(self):  # keep kind/retry_after when crossing process or thread boundaries
        return (_rebuild_error, (self.kind, str(self), self.retry_after, self.status, self.unreachable))


def _rebuild_error(kind, message, retry_after, status, unreachable=False):
    return ProviderError(kind, message, retry_after=retry_after, status=status, unreachable=unreachable)


@dataclass(frozen=True)
class ChatRequest:
    """What to ask: chat messages, sampling parameters, and optionally the JSON schema of the answer."""

    messages: tuple[dict[str, str], ...]
    parameters: ModelParameters = field(default_factory=ModelParameters)
    json_schema: dict[str, Any] | None = None

    @classmethod
    def of(cls, messages: list[dict[str, str]] | str, parameters: ModelParameters | None = None,
           json_schema: dict[str, Any] | None = None) -> "ChatRequest":
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return cls(tuple(dict(m) for m in messages), parameters or ModelParameters(), json_schema)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    parsed: Any = None  # the JSON value when a schema was given and the reply parsed
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    latency_ms: float = 0.0
    model: str | None = None  # the model the reply says answered (a server may map an alias to a snapshot)
    # the model's reasoning before its answer, where the provider returns it apart from the text
    # (``reasoning_content`` of OpenAI-compatible servers, Bedrock's ``reasoningContent`` blocks); None: none given
    reasoning: str | None = None


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    message: str


@runtime_checkable
class Provider(Protocol):
    name: ClassVar[str]
    spec: ModelSpec
    max_concurrency: int | None

    @property
    def model_id(self) -> str | None: ...

    async def complete(self, request: ChatRequest) -> Completion: ...
    async def list_models(self) -> list[str]: ...
    async def check(self) -> CheckResult: ...
    async def aclose(self) -> None: ...


class BaseProvider:
    """Shared plumbing: parameter support and warnings, schema-in-prompt fallback, secret redaction.

    A provider also declares itself, so that the UI, the CLI and the home page need no provider names:
    which ModelSpec fields it reads (``ui_fields``), where its key comes from (``key_env``, ``needs_key``),
    a one-line ``status()`` judged from the environment, ``price()`` and whether it counts tokens exactly."""

    name: ClassVar[str] = "base"
    # structured-output dialects this provider may speak, strongest first (structured.DIALECTS); the last is the
    # fallback that always works
    structured_chain: ClassVar[tuple[str, ...]] = ("prompt",)
    # every dialect it can be pinned to with ``model.structured_output``
    structured_dialects: ClassVar[frozenset[str]] = frozenset({"prompt"})
    supported_parameters: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "top_k", "max_tokens", "stop", "seed"})
    max_concurrency: int | None = None
    # the ModelSpec fields a user sets for this provider, in the order a form shows them
    ui_fields: ClassVar[tuple[str, ...]] = ("model",)
    # the environment variable the key is read from when ``api_key_env`` is not set (None: no key of ours)
    key_env: ClassVar[str | None] = None
    # other variables its credentials may come from (an executor on another machine needs them too: Spark)
    secret_env: ClassVar[tuple[str, ...]] = ()
    # the libraries its requests need, imported on first use, and by providers.load_clients before a job starts
    client_modules: ClassVar[tuple[str, ...]] = ()
    needs_key: ClassVar[bool] = False
    # count_tokens(text) is the model's own tokenizer, not an estimate
    exact_tokens: ClassVar[bool] = False
    model: str | None = None  # the resolved model id, set by each provider's __init__
    # set by the job runner from metadata.db: this endpoint answered this model before, so a run need not start
    # slowly to find out whether it works at all (engine.py); ``recalled``: looked up once per provider
    proven: bool = False
    recalled: bool = False
    # "module:Class" of its batch API (executors/batch.py's BatchBackend); None: `--executor batch` is refused
    batch_backend: ClassVar[str | None] = None
    # batch price / on-demand price, where the provider publishes one (prices.yaml may name batch prices instead)
    batch_discount: ClassVar[float] = 1.0

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._secrets: list[str] = []
        self._warned: set[str] = set()
        self._negotiation: Negotiation | None = None
        choice = getattr(spec, "structured_output", "auto")
        if choice != "auto" and choice not in self.structured_dialects:
            raise ConfigError(f"provider {self.name} cannot ask for structured output as {choice!r}; set "
                              f"structured_output to auto or one of {', '.join(sorted(self.structured_dialects))}")

    def __repr__(self) -> str:  # never show credentials, only where we talk to
        where = self.spec.base_url or self.spec.region or ""
        return f"<{type(self).__name__} model={self.model_id!r} {where}>".replace(" >", ">")

    # -- self-description ------------------------------------------------------------------------
    @property
    def model_id(self) -> str | None:
        """The model this provider talks to: the spec's model or the provider's default (e.g. the
        embedded GGUF's name); None when neither says."""
        return self.model or self.spec.model

    @classmethod
    def status(cls) -> str:
        """What this provider would use, judged from the environment alone (no network, never a
        secret's value); "" when it is not configured."""
        if cls.key_env:
            return f"{cls.key_env} set" if os.environ.get(cls.key_env) else ""
        return ""

    @classmethod
    def price(cls, model: str | None, home: Path | None = None) -> Price:
        """USD per million tokens of ``model`` (``home``'s prices.yaml overrides the built-in table)."""
        return price_for(model, home)

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError(f"{self.name} has no tokenizer here (exact_tokens is False)")

    # -- parameters ------------------------------------------------------------------------------
    def parameters(self, params: ModelParameters) -> dict[str, Any]:
        """The parameters this provider takes; any other that is set is dropped with one warning."""
        values = {k: v for k, v in params.model_dump().items() if v not in (None, [])}
        for name in sorted(set(values) - self.supported_parameters):
            if name not in self._warned:
                self._warned.add(name)
                log.warning("%s does not support parameter %r; it is ignored", self.name, name)
            values.pop(name)
        return values

    # -- structured output -----------------------------------------------------------------------
    def negotiation(self) -> Negotiation:
        """How this provider asks for schema-shaped output (``structured.py``): its ``structured_chain``,
        strongest first, or the one dialect ``model.structured_output`` pins."""
        if self._negotiation is None:
            choice = getattr(self.spec, "structured_output", "auto")
            self._negotiation = Negotiation(self.structured_chain, None if choice == "auto" else choice)
        return self._negotiation

    def endpoint_key(self) -> str:
        """Where this provider talks to, as metadata.db remembers a working dialect by (never a secret)."""
        return ""

    def messages_for(self, request: ChatRequest, dialect: str | None = None) -> list[dict[str, str]]:
        """Messages to send; the schema goes in the prompt when the dialect cannot (or may not) enforce it."""
        messages = [dict(m) for m in request.messages]
        if request.json_schema is not None and (dialect or self.structured_chain[-1]) in SCHEMA_IN_PROMPT:
            return with_schema_in_prompt(messages, request.json_schema)
        return messages

    @staticmethod
    def parse_json(text: str, request: ChatRequest) -> Any:
        """Strict parse of a schema-constrained reply; repair of sloppy JSON is parsing.py's job."""
        if request.json_schema is None:
            return None
        try:
            return json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return None

    # -- secrets ---------------------------------------------------------------------------------
    def secret_from_env(self, variable: str) -> str | None:
        value = os.environ.get(variable) or None
        if value:
            self.add_secret(value)
        return value

    def add_secret(self, value: str) -> None:
        """A credential this provider uses: masked in its error messages and in every log record."""
        self._secrets.append(value)
        redact.register(value)

    def redact(self, text: str) -> str:
        """This provider's secrets, and every one ``redact`` knows (URL user:password, query keys), masked:
        a server may echo the request URL or the key it refused in its error body."""
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return redact.mask(text)

    def error(self, kind: ErrorKind, message: str, **kw: Any) -> ProviderError:
        return ProviderError(kind, self.redact(f"{self.name}: {message}"), **kw)

    # -- lifecycle -------------------------------------------------------------------------------
    async def check(self) -> CheckResult:
        """Default health check: listing models proves the endpoint, the credentials and the model."""
        try:
            models = await self.list_models()
        except ProviderError as exc:
            return CheckResult(False, str(exc))
        if self.spec.model and models and self.spec.model not in models:
            return CheckResult(False, f"{self.name}: model {self.spec.model!r} is not offered here; "
                                      f"available: {', '.join(models[:10])}")
        return CheckResult(True, f"{self.name}: ok ({len(models)} models)")

    async def list_models(self) -> list[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def run_sync(coro):
    """Run a coroutine from sync code, also inside a notebook whose loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
