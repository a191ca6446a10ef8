"""The Spark executor: a job's work items run in Spark partitions, their outcomes written on the driver.

The driver plans the job exactly as the local executor does (same items, same keys, same resume rules): keys
already ``ok`` and repeated keys are dropped here, so nothing done is ever shipped. The rest go as JSON rows
``(key, item)`` to ``settings.partitions`` partitions (default: the cluster's task slots, one wave). Each
partition runs the local async engine (``spark_worker.StreamingEngine``) with its share of the concurrency
(``ceil(concurrency / running)``) and of the RPM/TPM limits (``limit // running``), where ``running`` is the
number of partitions that run at once (at most the task slots), and streams every
outcome to the driver's collector (``spark_collector.py``) as it finishes; the driver writes them through the
job's one sink (as ``Engine._write``) and reports progress as they arrive. A retried partition skips the keys
already in; a killed driver leaves what it wrote, and the job resumes like a local one.

Credentials never enter the Spark conf: partitions receive them over the collector connection, authenticated
by the run's token (``spark_session.provider_secrets``). docs/spark.md explains the choices.
"""
from __future__ import annotations

import functools
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..engine import Engine, Handler, RunAborted, RunResult, WorkItem, default_handler
from ..errors import SdstudioError
from ..store import Record
from . import admit
from .spark_collector import Collector
from .spark_session import collector_host, provider_secrets, spark_session, warn_redaction_gaps
from .spark_worker import EXIT_HOOK_ENV, PartitionPlan, pack, partition_function

SHIPPED_OPTIONS = ("output_retries", "failure_keys", "failure_records", "grace_s")
FLUSH_ROWS, FLUSH_SECONDS = 50, 1.0  # the driver writes what arrived every so many records or seconds


class SparkJobFailed(SdstudioError):
    """Spark gave up on the run (a partition failed more often than its retries allow)."""


class SparkExecutor(Engine):
    """``execute(items, handler)`` over Spark; the constructor is the local engine's (runner.execute passes both
    the same arguments), ``settings.spark_master`` and ``settings.partitions`` choose where and how wide."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_failure_driver = self.on_failure  # told on the driver: it may hold the job's state
        self._counters: dict[int, dict[str, Any]] = {}
        self._abort_message: str | None = None
        self._items: dict[str, WorkItem] = {}
        self._pending: list[Record] = []

    # -- the seam ----------------------------------------------------------------------------------
    def execute(self, items: Iterable[WorkItem], handler: Handler | None = None) -> RunResult:
        handler = handler or default_handler
        admit(self, list(items), self._items)
        self._report(force=True)
        try:
            if self._items:
                self._run_on_spark(handler)
        finally:
            self._writer.shutdown(wait=True)
            self._report(force=True)
        if self._store_error is not None:
            raise self._store_error
        if self._abort_message is not None:
            raise RunAborted(self._abort_message)
        return RunResult(self.progress, cancelled=self._cancelled(), failures=dict(self._failures),
                         permanent=set(self._permanent), answered=self._answered, models=set(self._models))

    # -- driver side -------------------------------------------------------------------------------
    def _run_on_spark(self, handler: Handler) -> None:
        spark = spark_session(self.settings.spark_master, self.job_id)
        sc = spark.sparkContext
        slots = max(1, sc.defaultParallelism)  # partitions that run at once (the cluster's task slots)
        partitions = max(1, min(self.settings.partitions or slots, len(self._items)))
        env, base_url = provider_secrets(self.provider)
        warn_redaction_gaps(spark, sorted(env))
        with Collector(collector_host(spark), {"env": env, "base_url": base_url}) as collector:
            plan = self._plan(collector, handler, min(partitions, slots))
            rows = [(key, json.dumps(item.to_json(), ensure_ascii=False)) for key, item in self._items.items()]
            group = f"sdstudio-job-{self.job_id}-{collector.token[:8]}"
            run_spark_job(sc, rows, partitions, partition_function(plan), group=group,
                          description=f"sdstudio job {self.job_id}: {len(rows)} requests",
                          thread_name=f"sdstudio-spark-{self.job_id}", drive=functools.partial(self._drive, collector),
                          stopped=self._stopped)

    def _plan(self, collector: Collector, handler: Handler, running: int) -> PartitionPlan:
        """What every partition gets; its share of the limits is of the partitions that run at once (``running``:
        more partitions than task slots run in waves, and dividing by all of them would leave slots idle)."""
        settings = self.settings
        options = {name: getattr(self, name) for name in SHIPPED_OPTIONS if getattr(self, name, None) is not None}
        negotiation = self.provider.negotiation() if hasattr(self.provider, "negotiation") else None
        return PartitionPlan(
            address=collector.address(), spec=self.provider.spec.model_dump(mode="json"),
            settings=partition_share(settings, running).model_dump(mode="json"), job_kind=self.job_kind,
            job_id=self.job_id, price=(self.price.input_per_m, self.price.output_per_m, self.price.known),
            code=pack({"handler": handler, "options": options}),
            dialect=negotiation.dialect if negotiation is not None and negotiation.confirmed else None,
            proven=bool(getattr(self.provider, "proven", False)), exit_hook=os.environ.get(EXIT_HOOK_ENV))

    def _stopped(self) -> bool:
        return self._cancelled() or self._abort_message is not None or self._store_error is not None

    def _drive(self, collector: Collector, thread: threading.Thread, cancel: Any) -> None:
        """Until the Spark job ends and every connection is read: take outcomes, write them in batches, report
        progress; stop the Spark job on cancel, on a provider that cannot work, or on a failed write."""
        pump(collector, thread, cancel, take=self._take, backlog=lambda: len(self._pending), flush=self._flush_pending,
             report=self._report, stopped=self._stopped)
        self._flush_pending()
        self._merge_negotiation()

    def _take(self, conn_id: int, message: dict[str, Any]) -> None:
        if "counters" in message:
            self._counters[conn_id] = message["counters"]
            self._sum_counters()
        if message.get("abort") and self._abort_message is None:
            self._abort_message = message["abort"]
        outcome = message.get("outcome")
        if outcome is None:
            return
        records = [Record.from_json(data) for data in outcome["records"]]
        self._pending.extend(records)
        self.progress.done += 1
        item = self._items.get(outcome["key"])
        if outcome["ok"]:
            self.progress.ok += 1
            return
        self.progress.failed += 1
        reason = outcome.get("failure") or "failed"
        self._failures[outcome["key"]] = reason
        if outcome.get("permanent"):
            self._permanent.add(outcome["key"])
        if self._on_failure_driver is not None and item is not None:
            raw = next((rec.raw_text for rec in records if rec.raw_text), None)
            self._on_failure_driver(item, reason, raw, None)

    def _sum_counters(self) -> None:
        every = list(self._counters.values())
        for name in ("attempts", "retries", "tokens_in", "tokens_out", "in_flight"):
            setattr(self.progress, name, sum(int(c.get(name, 0)) for c in every))
        self._answered = sum(int(c.get("answered", 0)) for c in every)
        self._models = {model for c in every for model in c.get("models", [])}
        self.progress.cost_usd = self.price.cost(self.progress.tokens_in, self.progress.tokens_out)

    def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._write_now(batch)

    def _merge_negotiation(self) -> None:
        """The driver's provider learns what the partitions found (the runner notes and remembers it)."""
        if not hasattr(self.provider, "negotiation"):
            return
        states = [c["negotiation"] for c in self._counters.values() if c.get("negotiation")]
        negotiation = self.provider.negotiation()
        negotiation.refused_calls += sum(int(s.get("refused", 0)) for s in states)
        negotiation.used = negotiation.used or any(s.get("used") for s in states)
        confirmed = [s for s in states if s.get("confirmed")]
        if confirmed:
            best = confirmed[0]
            negotiation.index, negotiation.confirmed = int(best["index"]), True
            if best.get("rejected"):
                negotiation.rejected = [tuple(r) for r in best["rejected"]]


def run_spark_job(sc: Any, rows: list[tuple[str, str]], partitions: int, function: Any, *, group: str, description: str,
                  thread_name: str, drive: Callable[[threading.Thread, Callable[[], None]], None],
                  stopped: Callable[[], bool]) -> None:
    """Run ``function`` over ``rows`` in ``partitions`` as Spark job group ``group``, on a thread of its own, while
    ``drive(thread, cancel)`` takes the outcomes here. Ctrl-C or a failing callback cancels the Spark job (it must
    not run on without its driver); a Spark failure is raised unless the run was stopped on purpose. Shared by the
    executor (requests) and ``spark_rows`` (workflow rows)."""
    outcome: dict[str, Any] = {}

    def spark_job() -> None:
        try:
            sc.setJobGroup(group, description, interruptOnCancel=True)
            outcome["summary"] = sc.parallelize(rows, partitions).mapPartitionsWithIndex(function).collect()
        except BaseException as exc:  # noqa: BLE001 - handed to the driver loop
            outcome["error"] = exc

    thread = threading.Thread(target=spark_job, name=thread_name, daemon=True)
    thread.start()
    try:
        drive(thread, lambda: sc.cancelJobGroup(group))
    except BaseException:  # Ctrl-C, a failing callback: the Spark job must not run on without its driver
        sc.cancelJobGroup(group)
        raise
    if "error" in outcome and not stopped():
        raise SparkJobFailed(f"the Spark job failed: {spark_error_line(outcome['error'])}")


def pump(collector: Collector, thread: threading.Thread, cancel: Callable[[], None], *,
         take: Callable[[int, dict[str, Any]], None], backlog: Callable[[], int], flush: Callable[[], None],
         report: Callable[[], None], stopped: Callable[[], bool]) -> None:
    """Until the Spark job ends and every connection is read: ``take`` each message, ``flush`` every
    ``FLUSH_ROWS`` records waiting (``backlog()``) or ``FLUSH_SECONDS``, ``report`` progress; once ``stopped()``
    (cancel, a provider that cannot work, a failed write) refuse new connections and ``cancel`` the Spark job."""
    cancelling = False
    last_flush = time.monotonic()
    while True:
        finished = not thread.is_alive() and collector.idle()
        try:
            conn_id, message = collector.events.get(timeout=0.1)
            take(conn_id, message)
        except queue.Empty:
            if finished:
                break
        if backlog() >= FLUSH_ROWS or time.monotonic() - last_flush >= FLUSH_SECONDS:
            flush()
            last_flush = time.monotonic()
        report()
        if stopped() and not cancelling:
            cancelling = True
            collector.accepting = False
            cancel()


def partition_share(settings: Any, running: int) -> Any:
    """One partition's run settings: its share of the job's concurrency and RPM/TPM among the ``running``
    partitions that run at once, on the local engine."""
    return settings.model_copy(update={
        "concurrency": max(1, math.ceil(settings.concurrency / running)), "executor": "local",
        "rpm": max(1, settings.rpm // running) if settings.rpm else None,
        "tpm": max(1, settings.tpm // running) if settings.tpm else None})


def spark_error_line(exc: BaseException) -> str:
    """The Python error a partition died of, when Spark's long Java trace carries one; else its first line."""
    from ..runner import one_line

    text = str(exc)
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if stripped and ("Error:" in stripped or "Exception:" in stripped) and not stripped.startswith("at "):
            return one_line(RuntimeError(stripped))
    return one_line(exc)


__all__ = ["SparkExecutor", "SparkJobFailed"]
