"""Provider registry: a name in a config -> the class that talks to that backend.

Entries are import paths so that choosing ``local`` never imports boto3, and choosing ``bedrock`` never
loads llama.cpp. Adding a provider = one module + one line here.
"""
from __future__ import annotations

import importlib

from ..config import ModelSpec
from ..errors import ConfigError
from .base import ChatRequest, CheckResult, Completion, Provider, ProviderError, Usage, run_sync

REGISTRY: dict[str, str] = {
    "openai": "sdstudio.providers.openai_compat:OpenAIProvider",
    "openai_compatible": "sdstudio.providers.openai_compat:OpenAICompatibleProvider",
    "caii": "sdstudio.providers.openai_compat:CaiiProvider",
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


def get_provider(spec: ModelSpec) -> Provider:
    """Build the provider a ModelSpec names. Raises ConfigError for missing settings or credentials."""
    return provider_class(spec.provider)(spec)


def list_models(spec: ModelSpec) -> list[str]:
    """The models the provider offers, from sync code (CLI, widgets); its connections are closed after.
    Doubles as a health check: a bad key, host or endpoint raises a ProviderError saying which."""
    provider = get_provider(spec)

    async def listing() -> list[str]:
        try:
            return await provider.list_models()
        finally:
            await provider.aclose()

    return run_sync(listing())


__all__ = ["REGISTRY", "DEFAULT_PROVIDER", "ChatRequest", "CheckResult", "Completion", "Provider",
           "ProviderError", "Usage", "get_provider", "list_models", "provider_class", "run_sync"]
