"""The executor seam: ``execute(items, handler) -> RunResult`` runs a job's work items and hands every
outcome to the job's one record sink.

A work item (``engine.WorkItem``: a stable key, a ChatRequest, what its records carry) round-trips through
JSON, and a handler is a pure function of (item, completion), so an executor that ships items to other
processes (Spark partitions, a provider's batch API) returns the same records as the local one. Adding an
executor = one module + one line in ``EXECUTORS``.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Iterable
from typing import Protocol

from ..engine import Engine, Handler, RunResult, WorkItem

EXECUTORS: dict[str, str] = {
    "local": "sdstudio.engine:Engine",  # asyncio in this process: AIMD concurrency, RPM/TPM, retries, resume
    "spark": "sdstudio.executors.spark:SparkExecutor",  # Spark partitions, outcomes streamed back (docs/spark.md)
    "batch": "sdstudio.executors.batch:BatchExecutor",  # the provider's batch API: half price, within a day
}


class Executor(Protocol):
    def execute(self, items: Iterable[WorkItem], handler: Handler | None = None) -> RunResult: ...


LocalExecutor = Engine


def executor_class(name: str) -> type:
    from ..errors import ConfigError

    try:
        module, _, attr = EXECUTORS[name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(sorted(EXECUTORS))}") from None
    return getattr(importlib.import_module(module), attr)


def admit(engine: Engine, items: list[WorkItem], into: dict[str, WorkItem]) -> None:
    """Start ``engine``'s run over ``items`` for an executor that ships them elsewhere (Spark, a batch API): the
    clock and total set, an unknown price noted, and every key not yet ok (with ``skip_done``) and not repeated put
    ``into`` the run; the rest count done and cached, so nothing done is ever shipped."""
    engine._started = time.monotonic()
    engine.progress.total = len(items)
    if not engine.price.known:
        engine.progress.note = "no price known for this model: cost shown as 0"
    seen = set(engine.store.done_request_keys(engine.job_kind, engine.job_id)) if engine.skip_done else set()
    for item in items:
        if item.key in seen:  # done in an earlier run, or the same key twice: never shipped
            engine.progress.done += 1
            engine.progress.cached += 1
        else:
            seen.add(item.key)
            into[item.key] = item


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "admit", "executor_class"]
