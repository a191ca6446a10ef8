"""What a provider's batch API offers the batch executor (executors/batch.py): the ``BatchBackend`` protocol each
backend implements (batch_openai.py, batch_bedrock.py), the ``BatchState`` a poll returns, and how a provider
names its backend (its class attribute ``batch_backend``: "module:Class", None when it has no batch API)."""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError
from ..providers.base import ChatRequest, Completion, ProviderError

# states after which a provider changes nothing more about a batch (its output files, if any, can be read)
FINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class BatchState:
    """What a poll learns. ``state``: validating | in_progress | finalizing | completed | failed | expired |
    cancelling | cancelled (a backend maps its provider's words onto these). ``files``: the provider's ids or URIs
    of the batch's ``input``, ``output`` and ``error`` files, kept in metadata.db."""

    state: str
    completed: int = 0
    failed: int = 0
    total: int = 0
    error: str | None = None
    files: dict[str, str | None] = field(default_factory=dict)


class BatchBackend(Protocol):
    """One provider's batch API, built with ``Backend(provider, settings)`` (the provider class names it)."""

    name: str
    max_requests: int
    max_bytes: int
    completion_window_s: float

    def line(self, key: str, request: ChatRequest) -> dict: ...
    def submit(self, lines: list[dict], *, job_id: int, part: int) -> str: ...
    def poll(self, batch_id: str) -> BatchState: ...
    def results(self, batch_id: str) -> Iterator[tuple[str, Completion | ProviderError]]: ...
    def cancel(self, batch_id: str) -> None: ...


def backend_for(provider: Any, settings: Any) -> BatchBackend:
    """The provider's batch backend; one line when it has none (the local model, CAII)."""
    path = getattr(type(provider), "batch_backend", None)
    if not path:
        raise ConfigError(no_batch_api(provider.name))
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)(provider, settings)


def no_batch_api(provider_name: str) -> str:
    return (f"provider {provider_name} has no batch API; run it with --executor local (batch: openai, "
            "openai_compatible servers with /v1/batches, bedrock)")


def check_batchable(provider_name: str) -> None:
    """Refuse ``--executor batch`` for a provider without a batch API before any job is opened."""
    from ..providers import provider_class

    if not getattr(provider_class(provider_name), "batch_backend", None):
        raise ConfigError(no_batch_api(provider_name))


__all__ = ["BatchBackend", "BatchState", "FINAL_STATES", "backend_for", "check_batchable", "no_batch_api"]
