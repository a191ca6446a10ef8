"""Custom workflows on Spark: rows, not single requests, go to the partitions.

A workflow row's step 2 can only be asked once its step 1 came back, so shipping requests one by one (the
Spark executor's ``(key, item)`` rows) would cost a Spark job per step. Instead the driver plans the rows
exactly as locally (``WorkflowRun.restore``: same keys, the steps an earlier run finished), ships every row
not finished as JSON ``(key, RowState)``, and each partition runs the workflow's own row pipeline
(``WorkflowRun._pipeline``: one engine per endpoint, later steps first) with its share of the concurrency and
RPM/TPM limits (``spark.partition_share``). A row's newest record goes to the driver's collector after every
step; the driver keeps the newest per row and writes batches into ``metadata.db``, and reports progress as
they come.

Faults: a row's record after its last step (ok, or failed at a step) is final and the collector marks the row
in; a record part-way is kept by the collector (``Collector.partial``), and a retried attempt of a lost
partition skips the rows in and resumes the others from their last streamed step: a step already answered is
not asked again (only requests in flight when the worker died are). Credentials reach the partitions over the
collector connection only, as for the Spark executor (docs/spark.md, "Custom workflows on Spark").
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..engine import Progress, RunAborted
from ..store import Record
from .spark import partition_share, pump, run_spark_job
from .spark_collector import Collector
from .spark_session import collector_host, provider_secrets, spark_session, warn_redaction_gaps
from .spark_worker import EXIT_HOOK_ENV, PING_INTERVAL_S, Link, pack, secret_environment, unpack

REPORT_SECONDS = 0.2
COUNTED = ("done", "ok", "failed", "in_flight", "retries", "attempts", "tokens_in", "tokens_out", "cost_usd")


@dataclass(frozen=True)
class RowsPlan:
    """What every partition gets inside its task: no row, no secret."""

    address: tuple[str, int, str]  # the collector's host, port and run token
    code: bytes  # pack(the WorkflowRun without its rows, store and providers)
    settings: dict[str, Any]  # RunSettings JSON: this partition's share
    job_id: int
    endpoints: dict[str, dict[str, Any]]  # endpoint -> its structured-output dialect and whether it is proven
    exit_hook: str | None = None


# -- driver side ------------------------------------------------------------------------------------------

def run_rows_on_spark(run: Any, job: Any, states: list[Any], merged: Any, cancel_event: threading.Event | None) -> bool:
    """Run the workflow's unfinished rows on Spark; True when cancelled. Records land as they arrive."""
    driver = RowsDriver(run, merged, cancel_event)
    try:
        driver.execute(states)
    finally:
        job.totals.end_round(driver.progress())
        job.totals.sent = driver.sent()
    return driver.cancelled


class RowsDriver:
    def __init__(self, run: Any, merged: Any, cancel_event: threading.Event | None):
        self.run, self.merged, self.cancel_event = run, merged, cancel_event
        self.counters: dict[int, dict[str, Any]] = {}
        self.pending: dict[str, Record] = {}
        self.abort: str | None = None
        self.store_error: BaseException | None = None
        self.cancelled = False
        self.started = time.monotonic()
        self._last_report = 0.0

    # -- progress ----------------------------------------------------------------------------------
    def progress(self) -> Progress:
        """The partitions' latest counters summed (a lost attempt's included: its calls were made) on top of
        the steps earlier runs finished."""
        p = Progress(total=self.merged.total)
        every = list(self.counters.values())
        for name in COUNTED:
            setattr(p, name, sum(c.get(name, 0) for c in every))
        p.done += self.merged.cached
        p.cached = self.merged.cached
        p.elapsed_s = time.monotonic() - self.started
        return p

    def sent(self) -> int:
        return sum(int(c.get("sent", 0)) for c in self.counters.values())

    def _report(self, force: bool = False) -> None:
        if self.merged.listener is not None and (force or time.monotonic() - self._last_report >= REPORT_SECONDS):
            self._last_report = time.monotonic()
            self.merged.listener(self.progress())

    # -- the run -----------------------------------------------------------------------------------
    def execute(self, states: list[Any]) -> None:
        steps = len(self.run.plan.steps)
        for state in states:  # every step stored by an earlier run: only the status moves (as _advance does)
            if state.next_step == steps and state.stored_status != "ok":
                self.pending[state.row.key] = self.run.record(state)
        todo = [state for state in states if state.next_step < steps]
        try:
            if todo:
                self._run_on_spark(todo)
        finally:
            self._flush()
            self._report(force=True)
        if self.store_error is not None:
            raise self.store_error
        if self.abort is not None:
            raise RunAborted(self.abort)

    def _stopped(self) -> bool:
        self.cancelled = self.cancelled or (self.cancel_event is not None and self.cancel_event.is_set())
        return self.cancelled or self.abort is not None or self.store_error is not None

    def _run_on_spark(self, todo: list[Any]) -> None:
        run = self.run
        settings = run.config.run
        spark = spark_session(settings.spark_master, run.job_id)
        sc = spark.sparkContext
        slots = max(1, sc.defaultParallelism)
        partitions = max(1, min(settings.partitions or slots, len(todo)))
        env: dict[str, str] = {}
        base_urls: dict[str, str] = {}
        for endpoint, provider in run.providers.items():
            values, base_url = provider_secrets(provider)
            env.update(values)
            if base_url:
                base_urls[endpoint] = base_url
        warn_redaction_gaps(spark, sorted(env))
        with Collector(collector_host(spark), {"env": env, "base_urls": base_urls}) as collector:
            plan = RowsPlan(address=collector.address(), code=pack(shippable(run)), job_id=run.job_id,
                            settings=partition_share(settings, min(partitions, slots)).model_dump(mode="json"),
                            endpoints={endpoint: endpoint_state(provider) for endpoint, provider in run.providers.items()},
                            exit_hook=os.environ.get(EXIT_HOOK_ENV))
            rows = [(state.row.key, json.dumps(dataclasses.asdict(state), ensure_ascii=False, default=str))
                    for state in todo]
            group = f"sdstudio-workflow-{run.job_id}-{collector.token[:8]}"
            run_spark_job(sc, rows, partitions, rows_partition_function(plan), group=group,
                          description=f"sdstudio workflow {run.job_id}: {len(rows)} rows",
                          thread_name=f"sdstudio-spark-workflow-{run.job_id}",
                          drive=functools.partial(self._drive, collector), stopped=self._stopped)

    def _drive(self, collector: Collector, thread: threading.Thread, cancel: Any) -> None:
        pump(collector, thread, cancel, take=self._take, backlog=lambda: len(self.pending), flush=self._flush,
             report=self._report, stopped=self._stopped)

    def _take(self, conn_id: int, message: dict[str, Any]) -> None:
        if "counters" in message:
            self.counters[conn_id] = message["counters"]
        if message.get("abort") and self.abort is None:
            self.abort = message["abort"]
        outcome = message.get("outcome")
        if outcome is not None:
            for data in outcome["records"]:  # the newest record of a row wins, as RecordSink keeps it
                record = Record.from_json(data)
                self.pending[record.item_key] = record

    def _flush(self) -> None:
        batch, self.pending = list(self.pending.values()), {}
        if batch and self.store_error is None:
            try:
                self.run.store.add_records(batch)
            except Exception as exc:  # noqa: BLE001 - full disk, replaced database...: stop the run at once
                self.store_error = exc


def shippable(run: Any) -> Any:
    """The workflow run a partition needs: its plan without the rows (they come as the partition's data), its
    prices and model ids; no store, no provider (built on the executor with the secrets sent there)."""
    shipped = copy.copy(run)
    shipped.plan = dataclasses.replace(run.plan, rows=[])
    shipped.store, shipped.providers = None, {}
    return shipped


def endpoint_state(provider: Any) -> dict[str, Any]:
    negotiation = provider.negotiation() if hasattr(provider, "negotiation") else None
    return {"dialect": negotiation.dialect if negotiation is not None and negotiation.confirmed else None,
            "proven": bool(getattr(provider, "proven", False))}


# -- one partition ------------------------------------------------------------------------------------------

class LinkSink:
    """The pipeline's record sink on a partition: each row's newest record goes to the driver at once, with the
    partition's running counters; ``final`` once the row will not change in this run."""

    def __init__(self, link: Link, merged: Any, exit_hook: str | None):
        self.link, self.merged = link, merged
        self._sent = 0
        self._last_ping = 0.0
        self._exit_at, _, self._exit_marker = (exit_hook or "").partition(":")

    def counters(self) -> dict[str, Any]:
        progress = self.merged.combined()
        return {**{name: getattr(progress, name) for name in COUNTED}, "sent": self.merged.sent}

    def put(self, record: Record) -> None:
        final = record.status == "ok" or "failed_step" in (record.provenance or {})
        self.link.send({"outcome": {"key": record.item_key, "final": final, "records": [record.to_json()]},
                        "counters": self.counters()})
        self._last_ping = time.monotonic()
        self._sent += 1
        if self._exit_at and self._sent == int(self._exit_at) and not os.path.exists(self._exit_marker):
            open(self._exit_marker, "w").close()
            os._exit(3)  # the test's lost executor: the Python worker dies mid-partition

    def ping(self, progress: Any = None) -> None:
        """MergedProgress's listener: counters now and then, so the driver's progress moves between rows."""
        if time.monotonic() - self._last_ping >= PING_INTERVAL_S:
            self._last_ping = time.monotonic()
            self.link.send({"counters": self.counters()})

    async def tick(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def restored_state(run: Any, data: dict[str, Any], partial: dict[str, Any] | None) -> Any:
    """A row's state as the driver planned it, or, on a retried attempt, as its last streamed record left it."""
    from ..workflows.custom import RowState
    from ..workflows.custom_plan import RowInput

    row = RowInput(**data["row"])
    if partial is None:
        return RowState(row, outputs=data["outputs"], steps=data["steps"], next_step=data["next_step"],
                        stored_status=data["stored_status"])
    state = RowState(row)
    run.resume_row(state, partial)
    return state


def run_rows_partition(plan: RowsPlan, index: int, attempt: int, rows: Iterable[tuple[str, str]]) -> dict[str, Any]:
    from ..config import ModelSpec, RunSettings
    from ..engine import run_coroutine
    from ..errors import SdstudioError
    from ..providers import get_provider
    from ..runner import one_line
    from ..workflows.pipeline import MergedProgress

    rows = list(rows)
    link = Link(plan.address, index, attempt, [key for key, _ in rows])
    try:
        skip, partial = set(link.reply.get("skip", [])), link.reply.get("partial", {})
        run = unpack(plan.code)
        states = [restored_state(run, json.loads(text), partial.get(key)) for key, text in rows if key not in skip]
        if not states:
            link.send({"done": True})
            return {"partition": index, "rows": 0, "skipped": len(skip)}
        steps = len(run.plan.steps)
        merged = MergedProgress(None, total=sum(steps - state.next_step for state in states), cached=0)
        sink = LinkSink(link, merged, plan.exit_hook)
        merged.listener = sink.ping
        with secret_environment(link.reply.get("env", {})):
            try:
                for sp in run.plan.steps:
                    if sp.endpoint in run.providers:
                        continue
                    spec = sp.spec.model_dump(mode="json")
                    if link.reply.get("base_urls", {}).get(sp.endpoint):
                        spec["base_url"] = link.reply["base_urls"][sp.endpoint]  # kept in this worker's memory
                    provider = get_provider(ModelSpec.model_validate(spec))
                    state = plan.endpoints.get(sp.endpoint, {})
                    if hasattr(provider, "negotiation"):
                        provider.negotiation().start_at(state.get("dialect"))
                    provider.proven = bool(state.get("proven"))
                    run.providers[sp.endpoint] = provider
                settings = RunSettings.model_validate(plan.settings)
                run_coroutine(lambda: run._pipeline(plan.job_id, states, merged, None, sink=sink, settings=settings))
            except SdstudioError as exc:  # the provider cannot work (credentials, endpoint): the driver stops the run
                link.send({"abort": one_line(exc), "kind": type(exc).__name__})
            link.send({"done": True, "counters": sink.counters()})
        return {"partition": index, "rows": len(states), "skipped": len(skip)}
    finally:
        link.close()


def rows_partition_function(plan: RowsPlan):
    """The function Spark runs per partition (``RDD.mapPartitionsWithIndex``)."""

    def run(index: int, rows: Iterable[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        from pyspark import TaskContext

        context = TaskContext.get()
        yield run_rows_partition(plan, index, context.attemptNumber() if context else 0, rows)

    return run


__all__ = ["RowsDriver", "RowsPlan", "run_rows_on_spark", "run_rows_partition"]
