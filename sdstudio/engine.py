"""Runs keyed model requests: concurrency, RPM/TPM limits, retries, cache/resume, progress, cancel.

Every workflow turns its job into ``WorkItem``s (a stable key + a ChatRequest + what the record needs)
and a handler that turns a Completion into records. The engine does the rest, the same way for all:

* a key already ``ok`` in ``records`` for the job is never sent again, so a re-run costs nothing and a
  killed job resumes where it stopped;
* up to ``concurrency`` requests in flight (never above the provider's ceiling), cut in half on a 429
  and regrown additively (AIMD), spaced to obey RPM, metered to obey TPM;
* transient errors and timeouts retried with full-jitter exponential backoff; auth, bad request and
  context-length fail the item at once with the message kept;
* a run that cannot work at all stops at once with ``RunAborted`` (one line naming the problem) instead of
  failing every item the same way: credentials refused (auth), or, before any request has been answered,
  a provider that cannot be reached or a 404 (unknown model or path). The job is marked failed with that
  error; rows already saved stay, so the same job resumes once the problem is fixed;
* Cancel sends nothing new; replies on their way get a short grace, then are abandoned and leave no row, so
  Resume sends them (``stopping.py`` says why);
* records written as they finish in batched transactions (every 50 rows or 1 s) on one writer thread.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from . import live
from .config import RunSettings
from .limits import AdaptiveLimit, RateLimiter, TokenBucket
from .loops import fast_loop_factory, run_coroutine
from .pricing import Price
from .providers.base import ChatRequest, Completion, Provider, ProviderError
from .record_sink import FLUSH_ROWS, FLUSH_SECONDS, MAX_BUFFERED_ROWS, RecordSink  # noqa: F401 - also imported from here
from .stopping import CANCEL_GRACE_S, Cancelled, RunAborted, aborted, is_fatal
from .store import Record, Store

# the data types of a run live in work.py; re-exported so ``from sdstudio.engine import WorkItem`` keeps working
from .work import (
    Handler,
    InvalidOutput,
    Progress,
    RunResult,
    WorkItem,
    default_handler,
    estimate_tokens,
    request_key,
    stamp_failed,
    stamp_ok,
)

PROGRESS_INTERVAL_S = 0.1
# after the first wave of requests is in flight, how long before the warm-up starts: the wave's last connections
# and writes finish first, then the import runs while its replies are awaited (see Engine.warm_up)
WARM_UP_DELAY_S = 0.05
# requests in flight before an endpoint never seen answering has answered once; and how many of a run's first
# failures, all refused for the same reason before anything succeeded, stop it: a server that refuses every
# request sees at most this many
FIRST_REQUESTS = 8


class Engine(RecordSink):
    """One run of work items against one provider, writing into one job's records (record_sink.py)."""

    def __init__(self, provider: Provider, store: Store, job_kind: str, job_id: int,
                 settings: RunSettings | None = None, *, price: Price | None = None,
                 on_progress: Callable[[Progress], None] | None = None, output_retries: int = 0,
                 cancel_event: Any = None, grace_s: float | None = None,
                 failure_keys: Callable[[WorkItem], list[str]] | None = None,
                 failure_records: Callable[[WorkItem, str, str | None], list[Record]] | None = None,
                 on_failure: Callable[[WorkItem, str, str | None, Completion | None], None] | None = None,
                 skip_done: bool = True, after_write: Callable[[], None] | None = None,
                 warm_up: Callable[[], None] | None = None):
        self.provider, self.store = provider, store
        self.job_kind, self.job_id = job_kind, job_id
        self.settings = settings or RunSettings()
        self.price = price or Price(0.0, 0.0, known=False)
        self.on_progress = on_progress
        self.output_retries = output_retries
        self.cancel_event = cancel_event  # a threading.Event, set from any thread
        default_grace = getattr(provider, "cancel_grace_s", None)
        self.grace_s = grace_s if grace_s is not None else CANCEL_GRACE_S if default_grace is None else default_grace
        self.live = live.current()  # who watches the requests in flight (a notebook's panel); None: nobody
        # item keys of the rows a failed request leaves (default: one row keyed by the request); a request
        # asking for k items fails k items, so the job's counts stay in items
        self.failure_keys = failure_keys
        # or the records themselves (item, reason, raw reply): a step of an item that already has a row (the
        # documents grounding check) fails that row with a stamp instead of leaving a row of its own
        self.failure_records = failure_records
        self.on_failure = on_failure  # told of every item that ended failed (after its rows are buffered)
        # skip keys the job already answered (resume); a caller that feeds items as it goes and tracks what
        # is done itself (pipeline.QueueEngine) turns it off and gets every item it feeds processed
        self.skip_done = skip_done
        self.after_write = after_write  # run on the writer thread after each batch is written (generation's dedup)
        # run once on the writer thread while the first wave of requests awaits its replies: what handling them
        # will load (dedup's numpy: ~60 ms of CPU) is loaded then, instead of stalling the second wave's sends
        self.warm_up = warm_up
        self._abort: ProviderError | None = None
        self._store_error: BaseException | None = None  # a write that failed: nothing more is sent
        self._answered = 0  # replies received in this run: once one arrives, the endpoint works
        ceiling = getattr(provider, "max_concurrency", None) or self.settings.concurrency
        self.limit = AdaptiveLimit(min(self.settings.concurrency, ceiling))
        self._refusals: list[str] = []  # reasons of the run's first failed requests while none has succeeded
        self._permanent: set[str] = set()
        self._workers: list[asyncio.Task] = []
        self._handling: set[asyncio.Task] = set()  # replies waiting for their handler (see _process)
        self._crash: BaseException | None = None  # a handler's unexpected error: the run stops and raises it
        self._models: set[str] = set()
        self.rpm = RateLimiter(self.settings.rpm) if self.settings.rpm else None
        self.tpm = TokenBucket(self.settings.tpm) if self.settings.tpm else None
        self.progress = Progress()
        self._buffer: list[Record] = []
        self._last_flush = time.monotonic()
        self._last_report = 0.0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sdstudio-writer")
        self._flush_lock: asyncio.Lock | None = None
        self._pending_flush: asyncio.Future | None = None
        self._failures: dict[str, str] = {}
        self._started = 0.0

    # -- public ----------------------------------------------------------------------------------
    def execute(self, items: Iterable[WorkItem], handler: Handler | None = None) -> RunResult:
        """The executor seam (``executors.Executor``): run the items, every outcome into the job's records."""
        return self.run(items, handler)

    def run(self, items: Iterable[WorkItem], handler: Handler | None = None, total: int | None = None) -> RunResult:
        """Blocking run on a fresh event loop (``runner.submit`` runs it in the background instead).
        Called where a loop already runs (a notebook cell), it runs on a worker thread with its own loop."""
        return run_coroutine(lambda: self.arun(items, handler, total))

    async def arun(self, items: Iterable[WorkItem] | AsyncIterator[WorkItem], handler: Handler | None = None,
                   total: int | None = None) -> RunResult:
        """Run ``items``: an iterable, or an async iterator that yields items while the run goes on (so
        requests that depend on earlier replies can be fed in); it ends when the source is exhausted."""
        handler = handler or default_handler
        self._start_small()
        self._flush_lock = asyncio.Lock()
        self._started = time.monotonic()
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        self.progress.total = total or 0
        if not self.price.known:
            self.progress.note = "no price known for this model: cost shown as 0"
        done_keys = await asyncio.get_running_loop().run_in_executor(
            self._writer, self.store.done_request_keys, self.job_kind, self.job_id) if self.skip_done else None
        queue = items if hasattr(items, "__anext__") else iter(items)
        workers = [asyncio.create_task(self._worker(queue, handler, done_keys))
                   for _ in range(self.limit.maximum)]
        self._workers = workers
        watcher = asyncio.create_task(self._watch(workers))
        try:
            await asyncio.gather(*workers)
            while self._handling:
                await asyncio.gather(*self._handling, return_exceptions=True)
            if self._crash is not None:
                raise self._crash
        finally:
            watcher.cancel()
            await self._flush(force=True)
            self._writer.shutdown(wait=True)
            await self.provider.aclose()  # its connections belong to this run's event loop
            self._report(force=True)
        if self._store_error is not None:
            raise self._store_error
        if self._abort is not None:
            raise aborted(self._abort, self._refusals)
        return RunResult(self.progress, cancelled=self._cancelled(), failures=dict(self._failures),
                         permanent=set(self._permanent), answered=self._answered, models=set(self._models))

    # -- internals -------------------------------------------------------------------------------
    def _start_small(self) -> None:
        """Decided when the run starts, not when the engine is built: the job runner tells the provider what
        earlier jobs learnt of its endpoint (its dialect, that it answers) between the two, and an endpoint known
        to answer starts at full width instead of costing every job a slow first wave."""
        provider = self.provider
        negotiation = provider.negotiation() if hasattr(provider, "negotiation") else None
        if negotiation is not None and negotiation.probing:
            self.limit.start_small(1)  # the dialect is found one request at a time: the others wait here, unsent
        elif not getattr(provider, "proven", False):
            self.limit.start_small(FIRST_REQUESTS)

    def _cancelled(self) -> bool:
        return self.cancel_event is not None and self.cancel_event.is_set()

    def _stop(self, exc: ProviderError) -> None:
        """Nothing more can succeed: the other workers stop now, before requests waiting for a slot are sent."""
        self._abort = exc
        for worker in [*self._workers, *self._handling]:
            if worker is not asyncio.current_task():
                worker.cancel()

    def _refused_throughout(self, exc: ProviderError) -> bool:
        """Were the run's first requests all refused for this same reason, with nothing succeeding? A request the
        server rejects as invalid (a validation error, an unsupported field) is rejected for every item alike:
        after ``FIRST_REQUESTS`` of them (or every item of a smaller run) the run stops instead of going on."""
        if exc.kind != "bad_request" or self.progress.ok:
            return False
        self._refusals.append(" ".join(str(exc).split()))
        enough = min(FIRST_REQUESTS, self.progress.total or FIRST_REQUESTS)
        return len(self._refusals) >= enough and len(set(self._refusals[:enough])) == 1

    async def _watch(self, workers: list[asyncio.Task]) -> None:
        """Periodic flush and progress (a long request still ticks); on Cancel, replies already on their way get
        ``grace_s`` to arrive (they are paid for), then the rest are abandoned: their items leave no row."""
        while True:
            await asyncio.sleep(min(FLUSH_SECONDS, 0.2))
            await self._flush()
            self._report()
            if self._abort is not None or self._store_error is not None or self._crash is not None:
                for worker in [*workers, *self._handling]:  # nothing more can succeed: in-flight requests are not
                    worker.cancel()                          # worth waiting for
                return
            if self._cancelled():
                deadline = time.monotonic() + self.grace_s
                while time.monotonic() < deadline and not all(w.done() for w in [*workers, *self._handling]):
                    await asyncio.sleep(0.05)
                for worker in [*workers, *self._handling]:
                    worker.cancel()
                return

    async def _worker(self, queue, handler: Handler, done_keys: set[str] | None) -> None:
        try:
            if hasattr(queue, "__anext__"):
                async for item in queue:
                    if not await self._take(item, handler, done_keys):
                        return
            else:
                for item in queue:
                    if not await self._take(item, handler, done_keys):
                        return
        except asyncio.CancelledError:
            return

    async def _take(self, item: WorkItem, handler: Handler, done_keys: set[str] | None) -> bool:
        """Process one item unless it is done already; False when the run must stop sending."""
        if self._cancelled() or self._abort is not None or self._store_error is not None or self._crash is not None:
            return False
        if done_keys is not None:
            if item.key in done_keys:
                self.progress.done += 1
                self.progress.cached += 1
                self._report()
                return True
            done_keys.add(item.key)  # the same key twice in one run is sent once
        if len(self._buffer) >= MAX_BUFFERED_ROWS:
            await self._flush(force=True)
            if self._store_error is not None:
                return False
        await self._process(item, handler)
        return True

    async def _process(self, item: WorkItem, handler: Handler, attempt: int = 0, output_attempt: int = 0,
                       raw: str | None = None) -> None:
        """Send the item (retrying what may succeed); its reply goes to ``_handle`` on a task of its own, so this
        worker sends its next request before the reply is parsed: a wave of replies arriving together gets all
        its next requests out first, and the parsing and validation wait until they are sent."""
        request = item.request
        while True:
            attempt += 1
            try:
                completion = await self._send(request, item)
                task = asyncio.ensure_future(self._handle(item, handler, completion, attempt, output_attempt))
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)
                return
            except Cancelled:
                return  # never sent: no row, so Resume sends it
            except ProviderError as exc:
                if self._abort is not None:
                    return
                if (not exc.retryable or attempt >= self.settings.max_attempts) and is_fatal(exc, self._answered):
                    self._stop(exc)  # not recorded as the item's failure: the job failed, not the item
                    return
                if not exc.retryable or attempt >= self.settings.max_attempts:
                    reason = str(exc) if attempt == 1 else f"{exc} (after {attempt} attempts)"
                    if not exc.retryable:
                        self._permanent.add(item.key)
                    self._fail(item, reason, raw, None)
                    if self._refused_throughout(exc):
                        self._stop(exc)
                    return
                self.progress.retries += 1
                if exc.kind == "rate_limited":
                    self.limit.on_rate_limited(exc.retry_after)
                    delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                else:
                    delay = self._backoff(attempt)
                await asyncio.sleep(delay)

    async def _handle(self, item: WorkItem, handler: Handler, completion: Completion, attempt: int,
                      output_attempt: int) -> None:
        """A reply into records; an unusable one asked again while ``output_retries`` allow, else failed."""
        raw = completion.text
        try:
            try:
                records = handler(item, completion)
            except InvalidOutput as exc:
                if output_attempt < self.output_retries and not self._cancelled():
                    self.progress.retries += 1
                    await self._process(item, handler, attempt, output_attempt + 1, raw)
                    return
                self._fail(item, str(exc), raw, completion)
                return
        except asyncio.CancelledError:
            return
        except Exception as exc:  # noqa: BLE001 - a bug in a handler: stop sending, raise it from the run
            self._crash = exc
            return
        self._account(completion)
        self._add(stamp_ok(records, self.job_kind, self.job_id, item, completion), ok=True)

    async def _send(self, request: ChatRequest, item: WorkItem) -> Completion:
        """One attempt: wait for a slot and the rate limits, then call with a timeout (``Cancelled`` instead when
        Cancel came meanwhile: nothing new starts after it)."""
        if self.tpm:
            await self.tpm.take(estimate_tokens(request))
        async with self.limit:
            if self.rpm:
                await self.rpm.wait()
            if self._cancelled():
                raise Cancelled()
            self.progress.in_flight += 1
            self.progress.attempts += 1  # every call made, retries included: what the provider saw
            if self.warm_up is not None and self.progress.in_flight >= int(self.limit.limit):
                self._start_warm_up()
            flight = self.live.start(live.label_of(item)) if self.live is not None else None
            try:
                async with asyncio.timeout(self.settings.timeout_s):  # unlike wait_for, no extra task per call
                    if flight is None:
                        completion = await self.provider.complete(request)
                    else:
                        with live.writing(self.live, flight):  # a streaming provider shows what it writes
                            completion = await self.provider.complete(request)
            except TimeoutError:
                raise ProviderError("transient", f"request timed out after {self.settings.timeout_s:g}s") from None
            finally:
                self.progress.in_flight -= 1
                if flight is not None:
                    self.live.end(flight)
        self._answered += 1
        if completion.model:
            self._models.add(completion.model)
        self.limit.on_success()
        self.limit.open_up()
        return completion

    def _start_warm_up(self) -> None:
        warm_up, self.warm_up = self.warm_up, None

        def run() -> None:
            try:
                warm_up()
            except Exception:  # noqa: BLE001 - only a head start: the real use meets any error where it belongs
                pass

        def submit() -> None:
            try:
                self._writer.submit(run)
            except RuntimeError:  # the run ended first (its writer is shut down): nothing left to warm up for
                pass

        asyncio.get_running_loop().call_later(WARM_UP_DELAY_S, submit)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt))."""
        cap = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (attempt - 1))
        return random.uniform(0, cap)

    def _account(self, completion: Completion) -> None:
        self.progress.tokens_in += completion.usage.input_tokens
        self.progress.tokens_out += completion.usage.output_tokens
        self.progress.cost_usd = self.price.cost(self.progress.tokens_in, self.progress.tokens_out)

    def _fail(self, item: WorkItem, reason: str, raw: str | None, completion: Completion | None) -> None:
        if completion is not None:
            self._account(completion)
        self._failures[item.key] = reason
        if self.failure_records is not None:
            records = self.failure_records(item, reason, raw)
        else:
            keys = self.failure_keys(item) if self.failure_keys else [item.key]
            records = [Record(job_kind=self.job_kind, job_id=self.job_id, item_key=key, request_key=item.key,
                              status="failed", topic=item.topic, input=item.input, provenance=item.provenance,
                              error=reason, raw_text=raw if index == 0 else None) for index, key in enumerate(keys)]
        self._add(stamp_failed(records, self.job_kind, self.job_id, item, completion), ok=False)
        if self.on_failure is not None:
            self.on_failure(item, reason, raw, completion)

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        self.progress.elapsed_s = now - self._started
        if self.on_progress and (force or now - self._last_report >= PROGRESS_INTERVAL_S):
            self._last_report = now
            self.on_progress(replace(self.progress))


__all__ = ["Cancelled", "Engine", "Handler", "InvalidOutput", "Progress", "RunAborted", "RunResult", "WorkItem",
           "default_handler", "estimate_tokens", "fast_loop_factory", "request_key", "run_coroutine"]
