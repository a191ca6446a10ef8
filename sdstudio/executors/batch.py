"""The batch executor: a job's requests go to the provider's batch API (OpenAI Batch, Bedrock batch inference),
which answers within a day at about half the on-demand price; the replies become records through the job's one
handler and sink, exactly as on demand.

Lifecycle of one ``execute(items, handler)``:

1. Keys already ``ok`` and repeated keys are dropped (as every executor does). Batches the job submitted in an
   earlier run whose results are not in yet (``batches`` in metadata.db, collected_at NULL) are *adopted*: their
   keys are not submitted again, so a process that died days ago costs nothing more when the job is resumed.
2. Structured output: a batch has no room for the negotiation round trips (providers/structured.py). The dialect
   remembered for the endpoint (the runner recalls it before the run) is used; when none is remembered and the
   provider may still choose, the first request with a schema is sent *on demand* first: its reply confirms the
   dialect for the rest and is a record like any other, so the probe costs one request at the on-demand price,
   never a failed batch of 50,000 lines in a dialect the server refuses.
3. The rest are split into parts of at most ``backend.max_requests`` lines and ``max_bytes`` bytes; each part's
   row (with its request keys) is written before the upload and given its remote id the moment the batch exists.
4. Open batches are polled every ``batch_poll_s`` seconds, backing off by half each time up to ``batch_poll_max_s``.
   A finished batch's result lines become records (at the batch price). Lines that failed with an error a retry
   can fix, lines without a result, and replies the handler refused (with output retries allowed) are asked again:
   on demand (``batch_retry: on_demand``, the default) or in a follow-up batch (``batch``). Errors a retry cannot
   fix (a 400 line, a malformed result line) fail just that item with the reason. An *expired* batch's answered
   lines are kept and only its unanswered requests are submitted again.
5. Cancel (the run's cancel_event, or ``sdstudio jobs cancel ID`` from anywhere) cancels the open batches
   remotely; their unanswered requests leave no row, so a resume submits them again.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from ..config import RunSettings
from ..engine import FLUSH_ROWS, Engine, Handler, InvalidOutput, Progress, RunResult, WorkItem, default_handler
from ..pricing import batch_price
from ..providers.base import Completion, ProviderError
from ..stopping import aborted
from ..store import Record, utcnow
from . import admit
from .batch_backend import FINAL_STATES, BatchBackend, BatchState, backend_for, check_batchable  # noqa: F401
from .batch_jobs import awaiting_results, cancel_job_batches, job_batches  # noqa: F401 - re-exported

BATCH_RETRY_ROUNDS = 2  # follow-up batches for failed lines (batch_retry: batch) before those items fail
BACKOFF = 1.5
ON_DEMAND = RunSettings.model_fields["executor"].default  # the in-process engine: retries and the dialect probe


class BatchExecutor(Engine):
    """``execute(items, handler)`` through the provider's batch API; the constructor is the local engine's (the
    runner passes both the same arguments). ``self.price`` is the batch price: every record costs what it cost."""

    def __init__(self, provider: Any, store: Any, job_kind: str, job_id: int, settings: Any = None, **options: Any):
        super().__init__(provider, store, job_kind, job_id, settings, **options)
        self.backend = backend_for(provider, self.settings)
        self.on_demand_price = self.price
        self.price = batch_price(self.price, provider)
        self._options = {k: v for k, v in options.items() if k not in ("price", "on_progress")}
        self._items: dict[str, WorkItem] = {}
        self._open: dict[int, dict[str, Any]] = {}  # batches row id -> row (with its remote id and request keys)
        self._retry: dict[str, str] = {}  # request key -> why its line must be asked again
        self._placed: set[str] = set()  # keys with an outcome, in an open batch, or waiting for a retry
        self._remote_cancel = False
        self._handler: Handler = default_handler
        self.submissions = 0  # batches this run created (tests count them; a resume adds none)

    # -- the seam ----------------------------------------------------------------------------------
    def execute(self, items: Iterable[WorkItem], handler: Handler | None = None) -> RunResult:
        self._handler = handler or default_handler
        admit(self, list(items), self._items)
        self._report(force=True)
        try:
            if self._items:
                self._run()
        finally:
            self._flush_now()
            self._writer.shutdown(wait=True)
            close = getattr(self.backend, "close", None)
            if close is not None:
                close()
            self._report(force=True)
        if self._store_error is not None:
            raise self._store_error
        if self._abort is not None:
            raise aborted(self._abort, self._refusals)
        return RunResult(self.progress, cancelled=self._cancelled() or self._remote_cancel,
                         failures=dict(self._failures), permanent=set(self._permanent), answered=self._answered,
                         models=set(self._models))

    # -- the run -----------------------------------------------------------------------------------
    def _stopped(self) -> bool:
        return (self._cancelled() or self._remote_cancel or self._abort is not None
                or self._store_error is not None)

    def _run(self) -> None:
        self._adopt()
        self._probe_dialect()
        rounds = 0
        delay = self.settings.batch_poll_s
        while not self._stopped():
            unplaced = [key for key in self._items if key not in self._placed]
            if unplaced:  # never submitted, or an expired batch's unanswered requests
                self._submit(unplaced)
                continue
            if not self._open:
                if not self._retry:
                    return
                retry, self._retry = self._retry, {}
                if self.settings.batch_retry == "batch" and rounds < BATCH_RETRY_ROUNDS:
                    rounds += 1
                    self._submit(list(retry))
                elif self.settings.batch_retry == "batch":
                    for key, reason in retry.items():
                        self._fail(self._items[key], f"{reason} (after {rounds + 1} batches)", None, None)
                else:
                    self._on_demand([self._items[key] for key in retry])
                continue
            if self._poll_open():
                delay = self.settings.batch_poll_s  # something finished: the others may be close
                continue
            self._wait(delay)
            delay = min(delay * BACKOFF, self.settings.batch_poll_max_s)
        if self._cancelled():
            self._cancel_open()

    def _wait(self, seconds: float) -> None:
        if self.cancel_event is not None:
            self.cancel_event.wait(seconds)
        else:
            time.sleep(seconds)
        self._report()

    def _adopt(self) -> None:
        """Batches an earlier run of this job submitted and never collected: poll them instead of paying again."""
        for row in self.store.open_batches(self.job_id):
            if row["remote_id"] is None:  # died before the provider created it: nothing was paid
                self.store.drop_batch(row["id"])
                continue
            keys = [key for key in row["request_keys"] if key in self._items and key not in self._placed]
            if not keys:
                if not any(key in self._items for key in row["request_keys"]) and row["state"] in FINAL_STATES:
                    self.store.update_batch(row["id"], collected_at=utcnow())  # its keys are all done
                continue
            row["request_keys"] = keys
            row["cancelled_before"] = row["state"] in ("cancelling", "cancelled")
            self._open[row["id"]] = row
            self._placed.update(keys)
        if self._open:
            note = f"resumed {len(self._open)} submitted batch(es): nothing submitted twice"
            self.progress.note = f"{self.progress.note}; {note}" if self.progress.note else note

    def _probe_dialect(self) -> None:
        """No dialect known and one to choose: the first request with a schema goes on demand (module doc)."""
        negotiation = self.provider.negotiation() if hasattr(self.provider, "negotiation") else None
        if negotiation is None or not negotiation.probing:
            return
        first = next((item for key, item in self._items.items()
                      if key not in self._placed and item.request.json_schema is not None), None)
        if first is not None:
            self._on_demand([first])

    def _submit(self, keys: list[str]) -> None:
        """Upload and create batches for ``keys``, in parts the provider takes; each row stored at once. A part
        below the provider's minimum (Bedrock takes no job under 100 records: a small job, the last of an expired
        batch's unanswered requests, a small retry) is asked on demand instead of refused."""
        smallest = getattr(self.backend, "min_requests", 1)
        for part in self._parts(keys):
            part_keys = [key for key, _ in part]
            if len(part_keys) < smallest:
                self._on_demand([self._items[key] for key in part_keys])
                continue
            row = self.store.add_batch(self.job_id, self.backend.name, part_keys)
            try:
                remote = self.backend.submit([line for _, line in part], job_id=self.job_id, part=row["part"])
            except BaseException:
                self.store.drop_batch(row["id"])
                raise
            self.store.update_batch(row["id"], remote_id=remote, state="validating")
            row.update(remote_id=remote, state="validating", request_keys=part_keys)
            self._open[row["id"]] = row
            self._placed.update(part_keys)
            self.submissions += 1
        self._note_dialect(keys)

    def _parts(self, keys: list[str]) -> Iterator[list[tuple[str, dict]]]:
        part: list[tuple[str, dict]] = []
        size = 0
        for key in keys:
            line = self.backend.line(key, self._items[key].request)
            length = len(json.dumps(line, ensure_ascii=False).encode()) + 1
            if part and (len(part) >= self.backend.max_requests or size + length > self.backend.max_bytes):
                yield part
                part, size = [], 0
            part.append((key, line))
            size += length
        if part:
            yield part

    def _note_dialect(self, keys: list[str]) -> None:
        """Lines asked for a schema in the negotiation's dialect: the runner notes and remembers it as used."""
        negotiation = self.provider.negotiation() if hasattr(self.provider, "negotiation") else None
        if negotiation is not None and any(self._items[key].request.json_schema is not None for key in keys):
            negotiation.used = True

    def _poll_open(self) -> bool:
        """Poll every open batch, collect the finished ones; True when one finished."""
        finished = False
        for row_id, row in list(self._open.items()):
            try:
                state = self.backend.poll(row["remote_id"])
            except ProviderError as exc:
                if exc.retryable:
                    continue  # the provider is busy or the network flaky: the next poll asks again
                raise
            self._save_state(row_id, state)
            if state.state in FINAL_STATES:
                self._collect(row, state)
                finished = True
            if self._stopped():
                break
        return finished

    def _save_state(self, row_id: int, state: BatchState) -> None:
        files = state.files
        self.store.update_batch(row_id, state=state.state, completed=state.completed, failed=state.failed,
                                error=state.error, input_file_id=files.get("input"),
                                output_file_id=files.get("output"), error_file_id=files.get("error"))

    def _collect(self, row: dict[str, Any], state: BatchState) -> None:
        """A finished batch's result lines into records (module doc, step 4)."""
        keys = set(row["request_keys"])
        answered: set[str] = set()
        if state.state != "failed":
            for key, outcome in self.backend.results(row["remote_id"]):
                if key not in keys or key in answered:  # not ours (another round's), or a repeated line
                    continue
                answered.add(key)
                self.progress.attempts += 1  # a line the provider answered or failed: a call it got
                item = self._items[key]
                if isinstance(outcome, Completion):
                    self._take_reply(item, outcome)
                else:
                    self._take_error(item, outcome)
        unanswered = [key for key in row["request_keys"] if key not in answered]
        where = f"batch {row['remote_id']}"
        if state.state == "expired":
            self._placed.difference_update(unanswered)  # submitted again, and only those
        elif state.state == "cancelled":
            # cancelled during this run (`sdstudio jobs cancel`, the provider's console): the run stops as cancelled;
            # one cancelled before it was resumed: its unanswered requests are submitted again
            self._remote_cancel = self._remote_cancel or not row.get("cancelled_before")
            self._placed.difference_update(unanswered)  # no row: a resume submits them again
        else:
            reason = (f"{where} failed: {state.error or 'no reason given'}" if state.state == "failed"
                      else f"{where} returned no result for this request")
            for key in unanswered:
                self._retry[key] = reason
        self._flush_now()
        if self._store_error is None:
            self.store.update_batch(row["id"], collected_at=utcnow())
        del self._open[row["id"]]

    def _take_reply(self, item: WorkItem, completion: Completion) -> None:
        # the provider's own parse of the reply against this request's schema (the backend saw no request)
        parse = getattr(self.provider, "parse_json", None)
        if parse is not None:
            completion = replace(completion, parsed=parse(completion.text, item.request))
        self._answered += 1
        if completion.model:
            self._models.add(completion.model)
        try:
            records = self._handler(item, completion)
        except InvalidOutput as exc:
            if self.output_retries > 0:
                self._retry[item.key] = str(exc)  # asked again, as the local engine re-asks
            else:
                self._fail(item, str(exc), completion.text, completion)
            return
        self._account(completion)
        for rec in records:
            rec.job_kind, rec.job_id = self.job_kind, self.job_id
            rec.request_key = rec.request_key or item.key
            rec.latency_ms = rec.latency_ms if rec.latency_ms is not None else completion.latency_ms
            rec.reasoning = rec.reasoning or completion.reasoning  # as the local engine keeps it
        self._add(records, ok=True)

    def _take_error(self, item: WorkItem, error: ProviderError) -> None:
        if error.retryable:
            self._retry[item.key] = str(error)
            return
        self._permanent.add(item.key)
        self._fail(item, str(error), None, None)

    def _on_demand(self, items: list[WorkItem]) -> None:
        """Ask ``items`` through the local engine at the on-demand price; its progress and outcomes join ours."""
        base = replace(self.progress)

        def merged(sub: Progress) -> None:
            self.progress = joined(base, sub)
            self._report()

        engine = Engine(self.provider, self.store, self.job_kind, self.job_id,
                        self.settings.model_copy(update={"executor": ON_DEMAND}), price=self.on_demand_price,
                        on_progress=merged, **self._options)
        try:
            result = engine.run(items, self._handler)
        finally:
            self.progress = joined(base, engine.progress)
        self._placed.update(item.key for item in items)
        self._failures.update(result.failures)
        self._permanent.update(result.permanent)
        self._answered += result.answered
        self._models.update(result.models)

    def run(self, items: Iterable[WorkItem], handler: Handler | None = None, total: int | None = None) -> RunResult:
        return self.execute(items, handler)

    def _cancel_open(self) -> None:
        """Cancel the submitted batches remotely; their rows say so (their answered lines are read on resume)."""
        for row_id, row in list(self._open.items()):
            try:
                self.backend.cancel(row["remote_id"])
                self._save_state(row_id, self.backend.poll(row["remote_id"]))
            except ProviderError as exc:
                self.store.update_batch(row_id, error=f"cancel failed: {exc}")

    # -- writing (no event loop here: the engine's buffer, flushed on this thread) ------------------
    def _add(self, records: list[Record], ok: bool) -> None:
        self._tally(records, ok)
        self._buffer.extend(records)
        self._report()
        if len(self._buffer) >= FLUSH_ROWS:
            self._flush_now()

    def _flush_now(self) -> None:
        batch, self._buffer = self._buffer, []
        self._write_now(batch)


def joined(base: Progress, sub: Progress) -> Progress:
    """Our figures plus an on-demand sub-run's (its total is part of ours already)."""
    summed = replace(base)
    for name in ("done", "ok", "failed", "cached", "in_flight", "retries", "attempts", "tokens_in", "tokens_out",
                 "cost_usd"):
        setattr(summed, name, getattr(base, name) + getattr(sub, name))
    return summed


__all__ = ["BatchBackend", "BatchExecutor", "BatchState", "FINAL_STATES", "awaiting_results", "backend_for",
           "cancel_job_batches", "check_batchable", "job_batches"]
