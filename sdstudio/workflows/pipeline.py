"""Plumbing for chains of dependent requests: an engine fed while it runs, and one ordered record writer.

A custom workflow's step 2 for a row can only be asked once that row's step 1 came back, and each step
may talk to another model. ``Engine.arun`` also takes an async item source, which ``QueueEngine`` feeds from a
priority queue: ``await engine.ask(item)`` hands one request to the engine's workers and returns
its ``Outcome``. Everything else is the engine's own: concurrency, RPM/TPM limits, 429 back-off,
retries, timeouts, output retries, progress and cancel. One ``QueueEngine`` serves every step that uses
the same model endpoint, so limits hold per endpoint however many steps share it; later steps get
priority so rows finish (and free their memory) instead of all rows piling up half done.

The engine would write records itself, but several engines finishing steps of one row could then write
that row out of order. ``RecordSink`` keeps the latest record per item key and writes batches on a
single thread, so the row's newest state is the one that lands.

It uses only the engine's public seam: an async item source and a failure callback.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..engine import Engine, Progress, RunResult, WorkItem
from ..providers import Completion
from ..store import Record, Store

FLUSH_ROWS, FLUSH_SECONDS = 50, 1.0


@dataclass(frozen=True)
class Outcome:
    """How one asked request ended: the handler's value, or why not."""

    ok: bool
    value: Any = None
    reason: str | None = None
    raw: str | None = None
    completion: Completion | None = None
    cancelled: bool = False


CANCELLED = Outcome(False, reason="cancelled", cancelled=True)


class _Ask:
    __slots__ = ("future", "item")

    def __init__(self, item: WorkItem, future: asyncio.Future):
        self.item, self.future = item, future

    def settle(self, outcome: Outcome) -> None:
        if not self.future.done():
            self.future.set_result(outcome)


class _Feed:
    """The engine's item source while it runs: an async iterator over a priority queue of asks. ``None``
    is the end (put back, so every worker of the engine sees it)."""

    def __init__(self) -> None:
        self.queue: asyncio.PriorityQueue = asyncio.PriorityQueue()
        self.order = itertools.count()

    def __aiter__(self) -> _Feed:
        return self

    async def __anext__(self) -> WorkItem:
        ask = (await self.queue.get())[2]
        if ask is None:
            self.put(math.inf, None)
            raise StopAsyncIteration
        return ask.item

    def put(self, priority: float, ask: _Ask | None) -> None:
        self.queue.put_nowait((priority, next(self.order), ask))


class QueueEngine:
    """An ``Engine`` fed while it runs, through the engine's public seam (an async item source and a
    failure callback). Start ``serve(handler)`` as a task, ``ask`` for each request, ``close()`` when
    nothing more will come. ``handler(item, completion)`` returns the value for the caller or raises
    ``InvalidOutput`` (asked again while output retries allow). Records are the caller's (``RecordSink``)."""

    def __init__(self, provider: Any, store: Store, job_kind: str, job_id: int, settings: Any, **options: Any):
        self.engine = Engine(provider, store, job_kind, job_id, settings, failure_keys=lambda item: [],
                             on_failure=self._failed, skip_done=False, **options)
        self._feed = _Feed()
        self._asks: dict[str, _Ask] = {}
        self.stopped = False

    @property
    def limit(self) -> Any:
        return self.engine.limit

    async def ask(self, item: WorkItem, priority: float = 0.0) -> Outcome:
        """Send ``item`` (lower ``priority`` first) and wait for its outcome; keys must be unique."""
        if self.stopped or (self.engine.cancel_event is not None and self.engine.cancel_event.is_set()):
            return CANCELLED
        ask = _Ask(item, asyncio.get_running_loop().create_future())
        self._asks[item.key] = ask
        self._feed.put(priority, ask)
        try:
            return await ask.future
        finally:
            self._asks.pop(item.key, None)

    def close(self) -> None:
        self._feed.put(math.inf, None)

    async def serve(self, handler: Callable[[WorkItem, Completion], Any]) -> RunResult:
        def answer(item: WorkItem, completion: Completion) -> list[Record]:
            value = handler(item, completion)  # InvalidOutput propagates: the engine retries
            ask = self._asks.get(item.key)
            if ask is not None:
                ask.settle(Outcome(True, value=value, raw=completion.text, completion=completion))
            return []

        try:
            return await self.engine.arun(self._feed, answer, total=0)
        finally:
            self.stopped = True  # cancelled, or cut off after the grace period: nobody answers now
            for ask in list(self._asks.values()):
                ask.settle(CANCELLED)

    def _failed(self, item: WorkItem, reason: str, raw: str | None, completion: Completion | None) -> None:
        ask = self._asks.get(item.key)
        if ask is not None:
            ask.settle(Outcome(False, reason=reason, raw=raw, completion=completion))


class RecordSink:
    """The newest record per item key, written in batches (every ``FLUSH_ROWS`` or ``FLUSH_SECONDS``) on
    one writer thread, in order: a row's later state never loses to an earlier one."""

    def __init__(self, store: Store):
        self.store = store
        self._pending: dict[str, Record] = {}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sdstudio-rows")
        self._writes: list[asyncio.Future] = []
        self._last = time.monotonic()
        self.error: BaseException | None = None

    def put(self, record: Record) -> None:
        if self.error is not None:
            raise self.error
        self._pending[record.item_key] = record
        if len(self._pending) >= FLUSH_ROWS or time.monotonic() - self._last >= FLUSH_SECONDS:
            self._submit()

    def _submit(self) -> None:
        if not self._pending:
            return
        batch, self._pending = list(self._pending.values()), {}
        self._last = time.monotonic()
        write = functools.partial(self.store.add_records, batch)
        self._writes.append(asyncio.get_running_loop().run_in_executor(self._writer, write))
        self._check()

    def _check(self) -> None:
        """Raise the first failed write (full disk, replaced database): the rows stop here, not later."""
        pending = []
        for write in self._writes:
            if not write.done():
                pending.append(write)
            elif write.exception() is not None and self.error is None:
                self.error = write.exception()
        self._writes = pending
        if self.error is not None:
            raise self.error

    async def tick(self) -> None:
        """Flush now and then, so a quiet stretch still saves the rows already finished."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS / 2)
            if time.monotonic() - self._last >= FLUSH_SECONDS:
                try:
                    self._submit()
                except Exception:  # noqa: BLE001 - kept in self.error; the next put raises it to the run
                    return

    async def flush(self) -> None:
        if self.error is not None:
            return  # already raised to the run; nothing more is written after a failed write
        self._submit()
        if self._writes:
            writes, self._writes = self._writes, []
            await asyncio.gather(*writes)

    def close(self) -> None:
        self._writer.shutdown(wait=True)


async def drive(engines: dict[str, QueueEngine], handler: Callable[[WorkItem, Completion], Any], sink: RecordSink,
                states: Iterable[Any], advance: Callable[[Any], Awaitable[None]], *, per_slot: int,
                cancel_event: threading.Event | None) -> bool:
    """Serve every engine with ``handler`` and take each of ``states`` through ``advance`` on ``per_slot``
    workers per request slot (enough to keep every engine busy); returns whether the run was cancelled.

    Shared by the row-chain workflows (custom rows, conversations) so that the teardown is one: a failed
    write or Ctrl-C cancels the engines at once; otherwise they are closed and drained, the first engine
    error is raised, and the sink writes what it holds whichever way the run ended."""
    serving = [asyncio.create_task(engine.serve(handler)) for engine in engines.values()]
    ticker = asyncio.create_task(sink.tick())
    queue = iter(states)
    slots = sum(engine.limit.maximum for engine in engines.values())

    def stopped() -> bool:
        return cancel_event is not None and cancel_event.is_set()

    async def worker() -> None:
        for state in queue:
            if stopped():
                return
            await advance(state)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, slots * per_slot))))
    except (asyncio.CancelledError, Exception):  # Ctrl-C or a failed write: stop sending at once
        for task in serving:
            task.cancel()
        raise
    finally:
        for engine in engines.values():
            engine.close()
        try:
            results = await asyncio.gather(*serving, return_exceptions=True)
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                raise errors[0]
        finally:
            ticker.cancel()
            await sink.flush()
            sink.close()
    return stopped()


class MergedProgress:
    """One progress figure over several engines, plus requests already answered by an earlier run
    (``cached``) and requests never sent because an earlier step of their row failed (``skipped``)."""

    SUMMED = ("done", "ok", "failed", "cached", "in_flight", "retries", "attempts", "tokens_in", "tokens_out",
              "cost_usd")

    def __init__(self, listener: Callable[[Progress], None] | None, total: int, cached: int):
        self.listener = listener
        self.total, self.cached, self.skipped = total, cached, 0
        self.parts: dict[str, Progress] = {}
        self.started = time.monotonic()

    def part(self, name: str) -> Callable[[Progress], None]:
        def update(progress: Progress) -> None:
            self.parts[name] = progress
            self.emit()
        return update

    def skip(self, count: int) -> None:
        self.skipped += count
        self.emit()

    def emit(self) -> None:
        if self.listener is not None:
            self.listener(self.combined())

    @property
    def sent(self) -> int:
        return sum(p.done - p.cached for p in self.parts.values())

    def combined(self) -> Progress:
        merged = Progress(total=self.total)
        for name in self.SUMMED:
            setattr(merged, name, sum(getattr(p, name) for p in self.parts.values()))
        merged.done += self.cached + self.skipped
        merged.cached += self.cached
        merged.elapsed_s = time.monotonic() - self.started
        merged.note = next((p.note for p in self.parts.values() if p.note), "")
        return merged
