"""Provider registry: a name in a config -> the class that talks to that backend.

Entries are import paths so that choosing ``local`` never imports boto3, and choosing ``bedrock`` never
loads llama.cpp. Adding a provider = one module + one line here.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import ModelSpec
    from ..pricing import Price
    from .base import ChatRequest, CheckResult, Completion, Provider, ProviderError, Usage, run_sync

# base.py's names, imported on first use: it loads every pydantic config, and `sdstudio generate --help` (which
# lists the provider names) must not pay for that
_FROM_BASE = ("ChatRequest", "CheckResult", "Completion", "Provider", "ProviderError", "Usage", "run_sync")


def __getattr__(name: str) -> Any:
    if name in _FROM_BASE:
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


REGISTRY: dict[str, str] = {
    "openai": "sdstudio.providers.openai_compat:OpenAIProvider",
    "openai_compatible": "sdstudio.providers.openai_compat:OpenAICompatibleProvider",
    "caii": "sdstudio.providers.caii:CaiiProvider",
    "bedrock": "sdstudio.providers.bedrock:BedrockProvider",
    "local": "sdstudio.providers.local:LocalProvider",
}
DEFAULT_PROVIDER = "local"


def provider_class(name: str) -> type:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r}; choose one of {', '.join(sorted(REGISTRY))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_clients(provider: Any) -> None:
    """Import the provider's client libraries (``client_modules``: aiohttp costs ~140 ms) now, before a job starts:
    providers import them on first use so that previews and ``--help`` never pay for them, but a job's first
    request should not wait for an import either."""
    for module in getattr(provider, "client_modules", ()):
        importlib.import_module(module)


def get_provider(spec: ModelSpec) -> Provider:
    """Build the provider a ModelSpec names. Raises ConfigError for missing settings or credentials."""
    return provider_class(spec.provider)(spec)


def provider_names() -> list[str]:
    """Every registered provider name, sorted (for pickers, help texts and error messages)."""
    return sorted(REGISTRY)


@dataclass(frozen=True)
class ProviderInfo:
    """What a provider declares about itself, read from its class (no instance, no connection)."""

    name: str
    summary: str  # the first paragraph of the class docstring
    ui_fields: tuple[str, ...]  # ModelSpec fields a user sets, in form order
    key_env: str | None  # the default variable its key is read from
    needs_key: bool
    exact_tokens: bool


def describe(name: str) -> ProviderInfo:
    """The declarations of provider ``name`` (imports its module, never its SDK)."""
    cls = provider_class(name)
    summary = " ".join((cls.__doc__ or "").strip().split("\n\n", 1)[0].split())
    return ProviderInfo(name, summary, tuple(cls.ui_fields), cls.key_env, bool(cls.needs_key),
                        bool(cls.exact_tokens))


def statuses() -> dict[str, str]:
    """provider name -> one line on what it would use, from the environment alone ("" = not configured).
    No network and no secret values: safe to show on the home page."""
    names = sorted(REGISTRY, key=lambda name: (name != DEFAULT_PROVIDER, name))  # the default first
    return {name: provider_class(name).status() for name in names}


def model_id(spec: ModelSpec) -> str | None:
    """The model id ``spec`` resolves to (the spec's, or the provider's default such as the embedded GGUF's
    name). Builds the provider, so a bad spec raises ConfigError as ``get_provider`` does, but opens no
    connection and loads no model."""
    return get_provider(spec).model_id


def required_model_id(provider: Provider, spec: ModelSpec) -> str:
    """The model id a built provider answers with; one line naming the fix when it has none."""
    model = provider.model_id
    if not model:
        raise ConfigError(f"provider {spec.provider} needs a model id (--model); "
                          f"`sdstudio models --provider {spec.provider}` lists them")
    return model


def price(spec: ModelSpec, home: Path | None = None) -> Price:
    """What ``spec``'s model costs per million tokens, as its provider prices it."""
    return provider_class(spec.provider).price(model_id(spec), home)


def list_models(spec: ModelSpec) -> list[str]:
    """The models the provider offers, from sync code (CLI, widgets); its connections are closed after.
    Doubles as a health check: a bad key, host or endpoint raises a ProviderError saying which."""
    provider = get_provider(spec)

    async def listing() -> list[str]:
        try:
            return await provider.list_models()
        finally:
            await provider.aclose()

    from .base import run_sync

    return run_sync(listing())


__all__ = ["REGISTRY", "DEFAULT_PROVIDER", "ChatRequest", "CheckResult", "Completion", "Provider", "ProviderError",
           "ProviderInfo", "Usage", "describe", "get_provider", "list_models", "model_id", "price", "provider_class",
           "provider_names", "required_model_id", "run_sync", "statuses"]
